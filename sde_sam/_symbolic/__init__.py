"""Sympy derivations of drift and diffusion, their numeric checks and the report (DESIGN §5)."""
