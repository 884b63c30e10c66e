"""Evaluate a cheap function of random bits once, into buffers, on XLA:CPU.

XLA fuses a cheap elementwise producer into each of its consumers. When a consumer broadcasts the producer's
result (a bias or a LayerNorm scale added to every row of a batch), the producer is recomputed for every row.
For RW-SAM's Rademacher probe (bits unpacked from 32-bit words with index arithmetic, then ``x + delta z``),
that recomputation cost a large part of a SAM step on the digits MLP (docs/performance.md). A conditional's
outputs are buffers: ``lax.cond(p, fn, fn, words)``, both branches ``fn``, computes ``fn(words)`` once whatever
``p`` is. ``p`` compares the data with a constant, so the compiler cannot fold the conditional away; under
``vmap`` (``custom_vmap``) it is taken from the first element, so the conditional stays one instead of
becoming a ``select`` of both branches. Values are those of ``fn(words)`` bit for bit. Further operands (the
parameters ``x`` the probe shifts) enter the same conditional, so ``x + delta z`` is formed there as well, with no
buffer of ``z`` in between. Only the CPU lowering takes this path (``lax.platform_dependent``): on a GPU a
conditional would read its predicate on the host.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PyTree, UInt32

_ANY_WORD = np.uint32(0x9E3779B9)  # the predicate's constant; either outcome gives the same result


def _cond_once(fn: Callable[..., PyTree]) -> Callable[..., PyTree]:
    @jax.custom_batching.custom_vmap
    def once(words, *operands):
        return jax.lax.cond(jnp.ravel(words)[0] == _ANY_WORD, fn, fn, words, *operands)

    @once.def_vmap
    def _batched(axis_size, in_batched, words, *operands):
        del axis_size
        if not any(jax.tree_util.tree_leaves(in_batched)):
            out = once(words, *operands)
            return out, jax.tree_util.tree_map(lambda _: False, out)
        in_axes = jax.tree_util.tree_map(lambda b: 0 if b else None, tuple(in_batched))
        out = _cond_once(jax.vmap(fn, in_axes=in_axes))(words, *operands)
        return out, jax.tree_util.tree_map(lambda _: True, out)

    return once


def computed_once(fn: Callable[..., PyTree], words: UInt32[Array, "*shape"], *operands: PyTree) -> PyTree:
    """``fn(words, *operands)`` for uint32 ``words``, computed once into buffers that XLA:CPU does not re-derive
    inside each consumer (module docstring); identical values on every platform."""
    if jnp.result_type(words) != jnp.uint32:
        raise TypeError(f"`words` must be uint32, got {jnp.result_type(words)}")
    if jnp.size(words) == 0:  # no word to take the predicate from (and nothing to unpack)
        return fn(words, *operands)
    return jax.lax.platform_dependent(words, *operands, cpu=_cond_once(fn), default=fn)
