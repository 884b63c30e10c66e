"""Noise and curvature estimators with standard errors, and the recorded observables (DESIGN §4)."""
