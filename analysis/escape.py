"""The escape problem shared by the escape stage (C5, F1) and the fidelity study: the 1-D sharp/flat basins, the
variants that leave them (m-SAM over m, n-SAM) and the SDE models compared (DESIGN §8). Imports nothing of
``analysis``, so that the stage and the study both stand above it."""

from __future__ import annotations

import jax.numpy as jnp

import sde_sam as ss


def escape_variants(rho: float, B: int) -> dict:
    """m-SAM at m = 1, 2, 4, ..., B (SAM at m = B) and n-SAM, by label."""
    out = {}
    m = 1
    while m <= B:
        out[f"m-SAM (m={m})" if m < B else f"SAM (m=B={B})"] = ss.variants.m_sam(rho, m)
        m *= 2
    out["n-SAM"] = ss.variants.n_sam(rho)
    return out


ESCAPE_MODELS = (("general", "leading"), ("expected", "leading"), ("expected", "empirical"))


def escape_problem(*, n: int, sharp_curvature: float, noise_scale: float, seed: int):
    """The 1-D sharp/flat problem (``n`` examples, the sharp basin's curvature, the examples' shift noise, the data
    seed), started in the sharp basin, its true barrier, and the observable ``outside(problem, x)``: 1 past the
    barrier, 0 in the sharp basin."""
    problem = ss.problems.sharp_flat_basins(
        dim=1, n=n, sharp_curvature=sharp_curvature, noise_scale=noise_scale, seed=seed, start="sharp"
    )
    barrier = ss.problems.sharp_flat_barrier(problem)

    def outside(problem, x):
        return 1.0 - ss.problems.in_sharp_basin(x, barrier).astype(jnp.float32)

    return problem, barrier, outside
