"""The default block of paths (or runs) vmapped together, from the problem size and the device.

Advancing every path at once is not the fastest on a CPU: the vmapped state and the per-path temporaries fall
out of cache (measured on 2 CPU cores: 1024 m-USAM paths on ``linear_regression()`` ran 1.6x slower as one block
than in blocks of 256; a digits-MLP path-step ran 1.3-1.5x slower in blocks of 8-16 than of 2-4), while blocks
that are too small leave the vectorised kernels idle (one path at a time: 2-3.5x slower). The rule, measured
by ``benchmarks/simulate.py`` (its ``default_block_vs_best`` rows compare it with the best block of a sweep):

    block = the largest divisor of the per-device count <= min(MAX_BLOCK, max(1, WORK_FLOPS / flops))

where ``flops`` is XLA's count for one compiled step of one path (``cost_analysis()``). So a block carries
about ``WORK_FLOPS`` of work per step. Small calls (per-device count x examples x parameters below
:data:`SMALL`) skip the count (one compilation of one step) and take every path at once, as before.
Values are bit-identical for a given block; the block used is recorded in each result's config.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable

import jax
import jax.numpy as jnp

from ._training._cost import compiled_cost

#: Work per block and step (flops), and the largest block, on a CPU and on an accelerator.
WORK_FLOPS = {"cpu": 4e8, "accelerator": 1e12}
MAX_BLOCK = {"cpu": 512, "accelerator": 65536}
#: Calls with per-device count x num_examples x dim below this take every path at once without a count.
SMALL = 2**20


def _kind() -> str:
    return "cpu" if jax.default_backend() == "cpu" else "accelerator"


def compiled_flops(fn: Callable, *args, cache_key: Hashable | None = None) -> float:
    """XLA's flop count of ``jax.jit(fn)(*args)`` (:func:`~sde_sam._training._cost.compiled_cost`), kept per
    ``cache_key`` (see :func:`cached_flops`)."""
    return cached_flops(cache_key, args, lambda: compiled_cost(fn, *args).flops)


def cached_flops(cache_key: Hashable | None, args: tuple, count: Callable[[], float]) -> float:
    """``count()``, kept per ``cache_key`` plus the backend and the structure, shapes and dtypes of ``args``: the
    count depends only on the program, and a compilation costs 0.3-2 s, so a second call with the same model costs
    nothing. ``cache_key=None``, or arguments whose structure cannot be hashed, are not cached. NaN (no count from
    the backend) makes :func:`target_block` return the largest block."""
    key = None
    if cache_key is not None:
        leaves, treedef = jax.tree_util.tree_flatten(args)
        key = (cache_key, jax.default_backend(), treedef, tuple((jnp.shape(a), jnp.result_type(a)) for a in leaves))
        try:
            hit = _FLOPS.get(key)
        except TypeError:  # unhashable static data in the structure
            key, hit = None, None
        if hit is not None:
            return hit
    flops = float(count())
    if key is not None:
        if len(_FLOPS) >= 256:
            _FLOPS.clear()
        _FLOPS[key] = flops
    return flops


_FLOPS: dict[Hashable, float] = {}


def target_block(flops_per_item: float) -> int:
    """``min(MAX_BLOCK, max(1, WORK_FLOPS / flops))`` for this backend (``MAX_BLOCK`` when no count)."""
    kind = _kind()
    if not flops_per_item > 0:
        return MAX_BLOCK[kind]
    return int(min(MAX_BLOCK[kind], max(1, WORK_FLOPS[kind] // flops_per_item)))


def largest_divisor_at_most(n: int, limit: int) -> int:
    """The largest divisor of ``n`` that is at most ``limit`` (>= 1)."""
    best = 1
    for d in range(1, math.isqrt(n) + 1):
        if n % d == 0:
            for c in (d, n // d):
                if best < c <= limit:
                    best = c
    return best


def default_block(per_device: int, size: int, flops: Callable[[], float], divides: bool = True) -> int:
    """The default block for ``per_device`` paths or runs per device.

    ``size``: ``num_examples * dim`` of the problem (with ``per_device`` it decides whether the call is small);
    ``flops()``: the flop count of one step of one path, computed only for calls that are not small.
    ``divides``: the block must divide ``per_device`` (the simulator); otherwise (padded runs) the block is
    balanced so the blocks are about equal."""
    if per_device * size < SMALL:
        return per_device
    limit = min(per_device, target_block(flops()))
    if divides:
        return largest_divisor_at_most(per_device, limit)
    blocks = math.ceil(per_device / limit)
    return math.ceil(per_device / blocks)
