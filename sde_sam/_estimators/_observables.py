"""Observables recorded along discrete runs and SDE paths: ``phi(problem, params) -> scalar``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from .._problems._problem import Problem, tree_norm_sq

Observable = Callable[[Problem, PyTree], Float[Array, ""]]


def _trace_sigma(problem: Problem, params: PyTree) -> Array:
    """``tr Sigma = mean_i ||g_i||^2 - ||g||^2`` from per-example gradients (DESIGN §4; ``ss.noise.trace_sigma``)."""
    from ._noise import trace_sigma

    return trace_sigma(problem, params, chunk_size=256)


BUILTIN: dict[str, Observable] = {
    "loss": lambda pr, x: pr.full_loss(x),
    "param_norm_sq": lambda pr, x: tree_norm_sq(x),
    "grad_norm_sq": lambda pr, x: tree_norm_sq(pr.full_grad(x)),
    "accuracy": lambda pr, x: pr.accuracy(x),
    "test_loss": lambda pr, x: pr.test_loss(x),
    "test_accuracy": lambda pr, x: pr.accuracy(x, pr.test_data),
    "trace_sigma": _trace_sigma,
}


@dataclasses.dataclass(frozen=True)
class Record:
    """Which observables to record, and how often (every ``every`` steps, the initial point included)."""

    names: tuple[str, ...]
    fns: tuple[Observable, ...]
    every: int = 1

    def evaluate(self, problem: Problem, params: PyTree) -> dict[str, Array]:
        return {name: jnp.asarray(fn(problem, params)) for name, fn in zip(self.names, self.fns, strict=True)}

    def check(self, problem: Problem) -> None:
        """Evaluate shapes once, so an observable the problem can't support fails before a long run."""
        for name, fn in zip(self.names, self.fns, strict=True):
            try:
                out = jax.eval_shape(fn, problem, problem.init_params)
            except ValueError as err:
                raise ValueError(f"observable {name!r} is not available for problem {problem.name!r}: {err}") from err
            if out.shape != ():
                raise ValueError(f"observable {name!r} must return a scalar, got shape {out.shape}")


def observables(*names: str, every: int = 1, **custom: Observable) -> Record:
    """A :class:`Record` of built-in observables by name plus user functions ``fn(problem, params)``.

    Built-ins: ``loss`` (full loss ``f``), ``param_norm_sq`` (``||x||^2``), ``grad_norm_sq`` (``||g||^2``),
    ``accuracy``, ``test_loss``, ``test_accuracy``, ``trace_sigma`` (``tr Sigma``).
    """
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"`every` must be a positive integer number of steps, got {every!r}")
    unknown = [n for n in names if n not in BUILTIN]
    if unknown:
        raise ValueError(f"unknown observable(s) {unknown}; built-in names: {', '.join(BUILTIN)} (or pass name=fn)")
    for name, fn in custom.items():
        if not callable(fn):
            raise TypeError(f"custom observable {name!r} must be callable fn(problem, params) -> scalar")
    all_names = tuple(names) + tuple(custom)
    if not all_names:
        raise ValueError("`observables` needs at least one name")
    if len(set(all_names)) != len(all_names):
        raise ValueError(f"duplicate observable names in {all_names}")
    return Record(all_names, tuple(BUILTIN[n] for n in names) + tuple(custom.values()), int(every))
