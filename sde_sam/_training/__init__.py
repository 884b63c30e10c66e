"""Discrete runs, recorded training of small networks, timing and the demo (DESIGN §2, §6.3)."""
