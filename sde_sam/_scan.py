"""The recorded scan shared by the discrete runs and the SDE paths: one run advanced segment by segment, its
observables recorded after each segment, a run that diverges frozen and counted (docs/sde.md, "Simulator"). Imports
nothing above the problems and the progress bars."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Int, PyTree

from ._problems._problem import tree_norm_sq
from ._progress import report


def diverged(params: PyTree, threshold: float) -> Array:
    """True when ``params`` holds a non-finite value or ``||x||^2 > threshold``."""
    sq = tree_norm_sq(params)
    return ~jnp.isfinite(sq) | (sq > threshold)


def observe_run(record, problem, params: PyTree, is_div: Array, states: tuple) -> tuple[dict[str, Array], Array, tuple]:
    """``(values, now_diverged, states)``: the recorded observables at ``params``, NaN for a diverged run, and the
    observables' states for the run's next recorded point (:meth:`Record.observe`). A run whose observables are not
    all finite (a loss that turns NaN while the parameters stay finite) diverges here: ``now_diverged`` is true and
    its values are NaN, so it is counted and never averaged in."""
    vals, states = record.observe(problem, params, states)
    bad = jnp.zeros((), bool)
    for v in vals.values():
        bad = bad | ~jnp.all(jnp.isfinite(v))
    now = bad & ~is_div
    return {name: jnp.where(is_div | bad, jnp.nan, v) for name, v in vals.items()}, now, states


#: A run's state between segments: ``(params, diverged, divergence step or -1, steps taken, the rest)``; the rest is
#: the caller's (the variant's state and the momentum buffer of a discrete run; nothing for a path).
Carry = tuple[PyTree, Array, Array, Array, Any]


def recorded_scan(
    advance: Callable[[Carry], Carry],
    record,
    problem,
    params0: PyTree,
    rest0: Any,
    num_segments: int,
    save: bool,
    bar: Int[Array, ""] | None,
    stride: int | Int[Array, ""],
) -> tuple[dict[str, Array], Array, Array, PyTree, PyTree | None]:
    """One run: ``record`` at ``params0``, then ``num_segments`` times ``advance`` (one recording interval, which
    freezes a run once it diverges) followed by ``record``. Returns ``(values, diverged, divergence step, final
    params, saved params)``: ``values[name]`` of shape ``(num_segments + 1,)``, the parameters at every recorded
    point when ``save`` (else ``None``). ``bar``/``stride``: the progress bar the steps are reported to
    (:func:`~sde_sam._progress.report`)."""
    first, bad0, ostates = observe_run(
        record, problem, params0, jnp.asarray(False), record.init_state(problem, params0)
    )
    init = (params0, bad0, jnp.where(bad0, 0, -1), jnp.asarray(0), rest0)

    def segment(carry, _):
        carry, ostates = carry
        params, is_div, div_step, k, rest = advance(carry)
        k = report(bar, k, stride)
        obs, now, ostates = observe_run(record, problem, params, is_div, ostates)
        carry = (params, is_div | now, jnp.where(now, k, div_step), k, rest)
        return (carry, ostates), (obs, params if save else None)

    (carry, _), (later, saved) = jax.lax.scan(segment, (init, ostates), None, length=num_segments)
    values = {name: jnp.concatenate([first[name][None], later[name]]) for name in record.names}
    if save:
        saved = jax.tree_util.tree_map(lambda a0, a: jnp.concatenate([a0[None], a]), params0, saved)
    return values, carry[1], carry[2], carry[0], saved
