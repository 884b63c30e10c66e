"""SVAG (Li, Malladi & Arora 2021): a discrete process with the SDE's drift and diffusion at any ``l``.

With two independent batch draws per step, ``G_l = a G(x; xi_1) + b G(x; xi_2)`` with
``a, b = (1 +- sqrt(2l - 1)) / 2`` has mean ``(a + b) E[G] = E[G]`` and covariance
``(a^2 + b^2) Cov[G] = l Cov[G]``. Run with step ``eta / l`` for ``l`` times as many steps, it keeps the
drift ``E[G]`` and the diffusion ``eta Cov[G]`` per unit time while its step shrinks, so as ``l`` grows the
runs converge (weakly, order 1 in ``1/l``) to the SDE ``dX = -E[G] dt + sqrt(eta Cov[G]) dW``: the SDE with
the expected drift and the empirical diffusion (:func:`sde_sam.sde_model` with ``drift="expected"``,
``diffusion="empirical"``). ``l = 1`` is the discrete method itself. A variant's state (F-SAM's EMA) moves
to the mean of the two draws' new states, once per (shortened) step.
"""

from __future__ import annotations

import math

import jax
from jaxtyping import PRNGKeyArray, PyTree

from .._checks import check_integer
from .._problems._problem import Problem
from ._variant import StepOutput, Variant


def check_svag(svag) -> int:
    """``svag`` must be a positive integer ``l`` (``1``: no SVAG)."""
    return check_integer("svag", svag, note=" l (1 = the plain discrete method)")


def svag_coefficients(l: int) -> tuple[float, float]:  # noqa: E741
    """``(a, b) = ((1 + sqrt(2l - 1)) / 2, (1 - sqrt(2l - 1)) / 2)``: ``a + b = 1``, ``a^2 + b^2 = l``."""
    s = math.sqrt(2 * check_svag(l) - 1)
    return (1.0 + s) / 2.0, (1.0 - s) / 2.0


def svag_gradient(
    problem: Problem,
    variant: Variant,
    l: int,  # noqa: E741
    params: PyTree,
    state: PyTree,
    batches: tuple[PyTree, PyTree],
    keys: tuple[PRNGKeyArray, PRNGKeyArray],
) -> tuple[PyTree, PyTree, StepOutput]:
    """``(G_l, new_state, StepOutput)`` with ``G_l = a G(x; xi_1) + b G(x; xi_2)`` (module docstring).

    ``batches`` and ``keys``: the two independent draws; the state moves to the mean of their new states and
    the reported loss and direction norm are those of the two draws averaged."""
    a, b = svag_coefficients(l)
    g1, s1, o1 = variant.gradient(problem, params, state, batches[0], keys[0])
    g2, s2, o2 = variant.gradient(problem, params, state, batches[1], keys[1])
    G = jax.tree_util.tree_map(lambda u, v: (a * u + b * v).astype(u.dtype), g1, g2)
    new_state = jax.tree_util.tree_map(lambda u, v: 0.5 * (u + v), s1, s2)
    out = jax.tree_util.tree_map(lambda u, v: 0.5 * (u + v), o1, o2)
    return G, new_state, out
