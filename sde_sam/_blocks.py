"""The default block of paths (or runs) vmapped together, from the problem size and the device.

Advancing every path at once is not the fastest on a CPU: the vmapped state and the per-path temporaries fall
out of cache, while blocks that are too small leave the vectorised kernels idle (the measurements are in
``docs/performance.md``). The rule, measured
by ``benchmarks/simulate.py`` (its ``default_block_vs_best`` rows compare it with the best block of a sweep):

    block = the largest divisor of the per-device count <= min(MAX_BLOCK, max(1, WORK_FLOPS / flops))

where ``flops`` is XLA's count for one compiled step of one path (``cost_analysis()``). So a block carries
about ``WORK_FLOPS`` of work per step. Small calls (per-device count x examples x parameters below
:data:`SMALL`) skip the count (one compilation of one step) and take every path at once, as before.
Values are bit-identical for a given block; the block used is recorded in each result's config.

**Calibration.** No rule in the problem's size predicts the block on a CPU: on 2 cores, with 2048 paths, the
best block of a sweep differs by a factor of 16 between n-SAM and m-USAM on the same linear regression, with
per-path flops, bytes and temporaries of the same order (``docs/performance.md``). So calls with
more than :data:`CALIBRATE_FLOPS` of work (all paths and steps) time the candidate blocks
:func:`candidate_blocks` around the rule's block (rule/32 .. 8x rule), a few short compiled runs each
(:func:`calibrated_block`), and take the fastest. The choice is kept for the process per program, paths and
machine, and on disk in the folder named by ``SDE_SAM_BLOCK_CACHE`` (if set), so that every later call on the
machine takes the same block and gives the same bits; a block differs by ~1 ulp between block sizes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Hashable

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from ._cost import compiled_cost
from ._io import atomic_write_bytes

#: Work per block and step (flops), and the largest block, on a CPU and on an accelerator.
WORK_FLOPS = {"cpu": 4e8, "accelerator": 1e12}
MAX_BLOCK = {"cpu": 512, "accelerator": 65536}
#: Calls with per-device count x num_examples x dim below this take every path at once without a count.
SMALL = 2**20
#: Calls with more work than this (flops of one path-step x paths per device x steps) calibrate their block.
CALIBRATE_FLOPS = {"cpu": 1e12, "accelerator": 1e16}
#: Work of one timed run of a candidate block (flops), and the number of timed runs (after one warm-up).
TIMING_FLOPS = {"cpu": 1e8, "accelerator": 1e12}
TIMING_REPEATS = 3
#: Octaves ``k`` of the candidate blocks ``rule * 2**k`` (:func:`candidate_blocks`). The range reaches further
#: below the rule than above it: on a held-out case the best block was a 32nd of the rule's
#: (docs/performance.md).
CANDIDATE_OCTAVES = tuple(range(-5, 4))
#: Environment variable naming a folder where calibrated blocks are kept (unset: in-process only).
CACHE_ENV = "SDE_SAM_BLOCK_CACHE"
#: Bump when the calibration changes, so that blocks kept on disk are chosen again.
CALIBRATION_VERSION = "2"


def _kind() -> str:
    return "cpu" if jax.default_backend() == "cpu" else "accelerator"


def compiled_flops(fn: Callable, *args, cache_key: Hashable | None = None) -> float:
    """XLA's flop count of ``jax.jit(fn)(*args)`` (:func:`~sde_sam._cost.compiled_cost`), kept per
    ``cache_key`` (see :func:`cached_flops`)."""
    return cached_flops(cache_key, args, lambda: compiled_cost(fn, *args).flops)


def cached_flops(cache_key: Hashable | None, args: tuple, count: Callable[[], float]) -> float:
    """``count()``, kept per ``cache_key`` plus the backend and the structure, shapes and dtypes of ``args``: the
    count depends only on the program, and it costs a compilation, so a second call with the same model costs
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
    return largest_divisor_at_most(per_device, limit) if divides else balanced_block(per_device, limit)


def worth_calibrating(total_flops: float) -> bool:
    """Whether a call of ``total_flops`` (all paths and steps) is long enough to time its candidate blocks: the
    calibration costs a few compilations, the wrong block several times the call (docs/performance.md)."""
    return total_flops > CALIBRATE_FLOPS[_kind()]


def balanced_block(n: int, limit: int) -> int:
    """The block of equal blocks (the last one padded) of ``n`` items with blocks of at most ``limit``."""
    return math.ceil(n / math.ceil(n / max(1, min(n, limit))))


def candidate_blocks(per_device: int, rule_block: int, divides: bool = True) -> tuple[int, ...]:
    """The blocks timed by :func:`calibrated_block`: the largest divisors of ``per_device`` at most
    ``rule_block * 2**k`` for ``k`` in :data:`CANDIDATE_OCTAVES` (rule/32 .. 8x rule); with ``divides=False``,
    the balanced blocks (:func:`balanced_block`) at most those limits."""
    limits = [max(1, min(per_device, int(rule_block * 2.0**k))) for k in CANDIDATE_OCTAVES]
    pick = largest_divisor_at_most if divides else balanced_block
    return tuple(sorted({pick(per_device, limit) for limit in limits}))


def timing_steps(block: int, flops_per_item: float) -> int:
    """Steps of one timed run of ``block`` items: about :data:`TIMING_FLOPS` of work, between 2 and 64."""
    if not flops_per_item > 0:
        return 8
    return int(min(64, max(2, math.ceil(TIMING_FLOPS[_kind()] / (block * flops_per_item)))))


def seconds_per_item_step(run: Callable[[], object], block: int, steps: int) -> float:
    """Median wall seconds of ``run()`` (one warm-up call first) over ``block * steps``."""
    jax.block_until_ready(run())
    times = []
    for _ in range(TIMING_REPEATS):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return statistics.median(times) / (block * steps)


def machine_fingerprint() -> str:
    """What the calibrated block depends on besides the program: JAX version, backend, devices, CPU."""
    devices = jax.local_devices()
    return repr(
        (
            jax.__version__,
            jax.default_backend(),
            devices[0].device_kind if devices else "",
            len(devices),
            os.cpu_count(),
            platform.machine(),
            platform.processor(),
        )
    )


_CALIBRATED: dict[str, int] = {}


def calibrated_block(
    per_device: int,
    rule_block: int,
    time_block: Callable[[int], float],
    program: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    on_candidate: Callable[[int, float], object] | None = None,
    divides: bool = True,
) -> int:
    """The fastest of :func:`candidate_blocks` ``(per_device, rule_block)`` by ``time_block(block)`` (seconds
    per path-step; a non-finite time drops the candidate).

    ``program``: text identifying the computation (the lowered step); with it the choice is kept for this
    process and machine, and on disk in ``cache_dir`` (default: the ``SDE_SAM_BLOCK_CACHE`` folder, if set;
    one atomically written JSON file per key, with the timings), so a later call takes the same block without
    timing. ``on_candidate(block, seconds)`` is called after each timing (progress). ``divides``: as in
    :func:`candidate_blocks` (``False`` for padded runs)."""
    if per_device < 1:
        raise ValueError(f"`per_device` must be a positive integer, got {per_device!r}")
    key = path = None
    if program is not None:
        text = repr((CALIBRATION_VERSION, machine_fingerprint(), per_device, rule_block, divides, program))
        key = hashlib.sha256(text.encode()).hexdigest()[:32]
        if key in _CALIBRATED:
            return _CALIBRATED[key]
        cache_dir = (os.environ.get(CACHE_ENV) or None) if cache_dir is None else cache_dir
        if cache_dir is not None:
            path = os.path.join(os.fspath(cache_dir), f"block-{key}.json")
            kept = _read_kept(path, per_device, divides)
            if kept is not None:
                _CALIBRATED[key] = kept
                return kept
    times = {}
    for block in candidate_blocks(per_device, rule_block, divides):
        seconds = float(time_block(block))
        if math.isfinite(seconds) and seconds > 0:
            times[block] = seconds
        if on_candidate is not None:
            on_candidate(block, seconds)
    fallback = largest_divisor_at_most if divides else balanced_block
    best = min(times, key=times.__getitem__) if times else fallback(per_device, rule_block)
    if key is not None:
        _CALIBRATED[key] = best
        if path is not None:
            record = {
                "block": best,
                "per_device": per_device,
                "rule_block": rule_block,
                "seconds_per_path_step": {str(b): t for b, t in times.items()},
                "machine": machine_fingerprint(),
                "version": CALIBRATION_VERSION,
            }
            os.makedirs(os.path.dirname(path), exist_ok=True)
            atomic_write_bytes(path, json.dumps(record, indent=1).encode())
    return best


def _read_kept(path: str, per_device: int, divides: bool = True) -> int | None:
    """The block kept in ``path``, or ``None`` when there is none or it cannot be trusted (unreadable, out of
    range, not a divisor of ``per_device`` when ``divides``): the calibration then runs again and rewrites it."""
    try:
        with open(path) as fh:
            block = json.load(fh)["block"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (
        isinstance(block, int)
        and not isinstance(block, bool)
        and 1 <= block <= per_device
        and (not divides or per_device % block == 0)
    ):
        return block
    return None


def chosen_block(
    per_device: int,
    size: int,
    work: int,
    choice: str | None,
    flops: Callable[[], float],
    time_block: Callable[[int, float], float],
    program: Callable[[], str],
    *,
    divides: bool = True,
    progress: bool = False,
    desc: str = "calibrate block",
) -> int:
    """The block of ``per_device`` items (paths or runs) of problem ``size`` (examples x parameters) for a call of
    ``work`` item-steps per device. ``choice``: ``"rule"`` (:func:`default_block`), ``"calibrate"`` (the fastest
    of :func:`calibrated_block`'s candidates by ``time_block(block, flops)``, kept per ``program()``), ``None``
    (every item at once for small calls, the rule below :data:`CALIBRATE_FLOPS` of work, else calibrate)."""
    if choice is None and per_device * size < SMALL:
        return per_device
    f = flops()
    if choice == "rule" or (choice is None and not worth_calibrating(f * work)):
        return default_block(per_device, size, lambda: f, divides=divides)
    limit = min(per_device, target_block(f))  # the flop rule's block
    rule = largest_divisor_at_most(per_device, limit) if divides else balanced_block(per_device, limit)
    bar = tqdm(desc=desc, delay=2.0, leave=False, disable=not progress, unit="block")
    with bar:
        return calibrated_block(
            per_device,
            rule,
            lambda block: time_block(block, f),
            program=program(),
            on_candidate=lambda block, seconds: bar.update(1),
            divides=divides,
        )
