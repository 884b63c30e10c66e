"""Progress bars for long jitted work (tqdm), fed from inside the compiled scan.

A bar is registered on the host under an integer id; the compiled code carries the id as an ordinary int32
argument (so one compilation serves every call) and reports finished steps through
:func:`jax.pure_callback` with ``vmap_method="expand_dims"``: one host call for a whole vmapped block of paths
or runs, about a hundred per call. The callback returns zeros that are added to an integer step
counter, which keeps it from being removed by the compiler and leaves every floating-point value unchanged.
The bar counts the steps of every block of paths/runs (blocks run one after another). A bar appears only once
a call has run for ``delay`` seconds, so short calls print nothing.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Int
from tqdm.auto import tqdm

_BARS: dict[int, tqdm] = {}
_IDS = itertools.count(1)


def _advance(bar_id: Any, amount: Any) -> np.ndarray:
    bar = _BARS.get(int(np.ravel(bar_id)[0]))
    if bar is not None:
        bar.update(int(np.ravel(amount)[0]))
    return np.zeros(np.shape(amount), np.int32)


def report(bar_id: Int[Array, ""] | None, counter: Int[Array, ""], stride: int | Int[Array, ""]) -> Int[Array, ""]:
    """Inside compiled code: after step ``counter`` of one block, advance bar ``bar_id`` by ``stride`` steps when
    ``counter`` is a multiple of ``stride`` (so a long run makes about a hundred host calls, not one per step);
    returns ``counter`` unchanged. ``bar_id=None`` (progress off) adds no callback at all."""
    if bar_id is None:
        return counter
    shape = jax.ShapeDtypeStruct(jnp.shape(counter), jnp.int32)
    amount = jnp.full(jnp.shape(counter), stride, jnp.int32)

    def call(_):
        return jax.pure_callback(_advance, shape, bar_id, amount, vmap_method="expand_dims")

    zero = jax.lax.cond(counter % stride == 0, call, lambda _: jnp.zeros(jnp.shape(counter), jnp.int32), None)
    return counter + zero.astype(counter.dtype)


def stride(num_segments: int, steps_per_segment: int | Int[Array, ""], reports: int = 100) -> int | Int[Array, ""]:
    """Steps between two reports: whole segments, about ``reports`` of them over the call (``steps_per_segment``
    may be traced)."""
    return steps_per_segment * max(1, num_segments // reports)


def total(num_segments: int, steps_per_segment: int, blocks: int) -> int:
    """What the bar counts to: the steps reported by :func:`report` over ``blocks`` blocks."""
    segments = max(1, num_segments // 100)
    return blocks * (num_segments // segments) * segments * steps_per_segment


@contextlib.contextmanager
def progress_bar(total: int, desc: str, enabled: bool = True, delay: float = 2.0) -> Iterator[Array | None]:
    """A tqdm bar of ``total`` steps for the duration of a call; yields the id to pass to the compiled
    code (``None`` when ``enabled`` is false). The bar shows after ``delay`` seconds and is closed on exit."""
    if not enabled:
        yield None
        return
    bar_id = next(_IDS)
    _BARS[bar_id] = tqdm(total=int(total), desc=desc, delay=delay, leave=False, unit="step", dynamic_ncols=True)
    try:
        yield jnp.asarray(bar_id, jnp.int32)
    finally:
        _BARS.pop(bar_id).close()
