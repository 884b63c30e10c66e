"""SDE models: batch laws, drifts, diffusions, the model, Euler-Maruyama simulation and SVAG (DESIGN §3)."""
