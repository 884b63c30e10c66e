"""SAM variants: perturbation rules, normalizations, preconditioners, the step and its optax adapter (DESIGN §2)."""
