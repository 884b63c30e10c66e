"""Drive a user's optax chain with a variant's update direction ``G`` (DESIGN §2)."""

from __future__ import annotations

from typing import Any, NamedTuple

from jaxtyping import PRNGKeyArray, PyTree

from .._problems._problem import Problem
from ._variant import StepOutput, Variant


class TrainState(NamedTuple):
    params: PyTree
    variant_state: PyTree
    opt_state: Any


class OptaxStepper(NamedTuple):
    """``init(params) -> TrainState`` and ``step(state, batch, key) -> (TrainState, StepOutput)``."""

    init: Any
    step: Any


def with_optax(problem: Problem, variant: Variant, optimizer) -> OptaxStepper:
    """Use ``variant``'s direction ``G`` as the gradient fed to an optax ``GradientTransformation``.

    Example (m-SAM direction with heavy-ball momentum)::

        stepper = ss.with_optax(problem, ss.variants.m_sam(0.05, 4), optax.sgd(0.1, momentum=0.9))
        state = stepper.init(problem.init_params)
        state, out = jax.jit(stepper.step)(state, batch, key)

    With ``optax.sgd(eta)`` this is exactly the plain step ``x - eta * G``.
    """
    import optax

    def init(params: PyTree) -> TrainState:
        return TrainState(params, variant.init(params), optimizer.init(params))

    def step(state: TrainState, batch: PyTree, key: PRNGKeyArray) -> tuple[TrainState, StepOutput]:
        G, vstate, out = variant.gradient(problem, state.params, state.variant_state, batch, key)
        updates, opt_state = optimizer.update(G, state.opt_state, state.params)
        return TrainState(optax.apply_updates(state.params, updates), vstate, opt_state), out

    return OptaxStepper(init, step)
