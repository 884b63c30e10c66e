"""Wall-clock cost of one step of a variant: medians of repeated, compiled, synchronised calls."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping

import jax
import jax.random as jr
import numpy as np
from jaxtyping import PyTree

from .._problems._problem import Problem
from .._problems._sampler import Sampler
from .._variants._variant import Variant
from ._runner import step_keys_of


def median_time(fn, *args, repeats: int = 7, number: int = 10) -> float:
    """Median over ``repeats`` of the mean time of ``number`` calls of ``fn(*args)`` (after one warm-up call)."""
    jax.block_until_ready(fn(*args))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = None
        for _ in range(number):
            out = fn(*args)
        jax.block_until_ready(out)
        samples.append((time.perf_counter() - start) / number)
    return statistics.median(samples)


def step_fn(problem: Problem, variant: Variant, eta: float = 0.05):
    """A jitted single step ``(params, state, batch, key) -> (params, state)`` of ``variant``."""

    @jax.jit
    def step(params: PyTree, state: PyTree, batch: PyTree, key):
        G, state, _ = variant.gradient(problem, params, state, batch, key)
        return jax.tree_util.tree_map(lambda p, g: p - eta * g, params, G), state

    return step


def scan_fn(problem: Problem, variant: Variant, eta: float = 0.05):
    """A jitted ``(params, state, batches, key) -> params`` running one step per leading slice of ``batches``
    inside ``lax.scan``: the per-step cost as the runner pays it, without Python dispatch overhead."""

    @jax.jit
    def run(params: PyTree, state: PyTree, batches: PyTree, key):
        def body(carry, batch_and_key):
            params, state = carry
            batch, step_key = batch_and_key
            G, state, _ = variant.gradient(problem, params, state, batch, step_key)
            return (jax.tree_util.tree_map(lambda p, g: p - eta * g, params, G), state), None

        num = jax.tree_util.tree_leaves(batches)[0].shape[0]
        step_keys = step_keys_of(key, jax.numpy.arange(num))  # as the runner derives them
        (params, _), _ = jax.lax.scan(body, (params, state), (batches, step_keys))
        return params

    return run


def stacked_batches(problem: Problem, sampler: Sampler, num_steps: int, key=None) -> PyTree:
    """``num_steps`` batches of ``sampler`` stacked on a leading axis."""
    key = jr.key(0) if key is None else key
    idx = jax.vmap(lambda k: sampler.indices(key, k, problem.num_examples))(jax.numpy.arange(num_steps))
    return jax.tree_util.tree_map(lambda a: a[idx], problem.data)


def time_per_step(problem: Problem, variant: Variant, sampler: Sampler, repeats: int = 7, steps: int = 50) -> float:
    """Median seconds per step of ``variant`` on ``problem`` with ``sampler``'s batch size (``steps`` steps
    per timed call inside one scan, median over ``repeats`` calls)."""
    variant.check(sampler.batch_size, problem.num_examples)
    params = problem.init_params
    batches = stacked_batches(problem, sampler, steps)
    return (
        median_time(
            scan_fn(problem, variant), params, variant.init(params), batches, jr.key(1), repeats=repeats, number=1
        )
        / steps
    )


def serial_m_sam_scan_fn(problem: Problem, rho: float, micro_batch_size: int, eta: float = 0.05):
    """m-SAM in its serial form, as the original implementation runs it: the ``k`` micro-batches are visited one
    after another (an inner ``lax.scan``), each with its own SAM ascent and gradient, and the ``k`` gradients are
    averaged. Same ``(params, state, batches, key) -> params`` signature as :func:`scan_fn`."""
    from .._variants._variant import sam

    inner = sam(rho)

    @jax.jit
    def run(params: PyTree, state: PyTree, batches: PyTree, key):
        def body(params, batch):
            B = jax.tree_util.tree_leaves(batch)[0].shape[0]
            k = B // micro_batch_size
            micro = jax.tree_util.tree_map(lambda a: a.reshape(k, micro_batch_size, *a.shape[1:]), batch)

            def one(acc, batch_j):
                G, _, _ = inner.gradient(problem, params, (), batch_j, key)
                return jax.tree_util.tree_map(lambda a, g: a + g / k, acc, G), None

            G, _ = jax.lax.scan(one, jax.tree_util.tree_map(jax.numpy.zeros_like, params), micro)
            return jax.tree_util.tree_map(lambda p, g: p - eta * g, params, G), None

        params, _ = jax.lax.scan(body, params, batches)
        return params

    return run


def interleaved_times(
    calls: dict, repeats: int, steps: int | Mapping[str, int], seed: int = 0
) -> dict[str, list[float]]:
    """Seconds per step of each zero-argument call (one call = ``steps`` steps, or ``steps[name]`` for a mapping),
    timed in ``repeats`` rounds (every call once per round, after one warm-up), so that drifting machine load hits
    all alike.

    Each round times the calls in a fresh random order (``numpy.random.default_rng(seed)``, so the orders are
    reproducible): a call's position and the call timed just before it change from round to round. A fixed order
    is biased: on 2 CPU cores the call timed second in each round of the ``benchmarks/variants.py`` set, right
    after SGD, ran slower than an identical program timed elsewhere in the round (docs/performance.md),
    which had read as an overhead of SAM's step."""
    for call in calls.values():
        jax.block_until_ready(call())
    names = list(calls)
    rng = np.random.default_rng(seed)
    samples = {name: [] for name in names}
    for _ in range(repeats):
        for i in rng.permutation(len(names)):
            name = names[i]
            start = time.perf_counter()
            jax.block_until_ready(calls[name]())
            samples[name].append((time.perf_counter() - start) / (steps[name] if isinstance(steps, Mapping) else steps))
    return samples


def median_ratio(samples: dict[str, list[float]], name: str, reference: str) -> float:
    """Median over rounds of the per-round time ratio ``name / reference``."""
    return statistics.median(a / b for a, b in zip(samples[name], samples[reference], strict=True))


def variant_calls(
    problem: Problem,
    variants: dict[str, Variant],
    sampler: Sampler,
    steps: int,
    serial_micro_batch_sizes=(),
    rho: float = 0.05,
) -> dict:
    """Zero-argument calls running ``steps`` steps of each variant in one jitted scan (plus serial m-SAM for
    each micro-batch size in ``serial_micro_batch_sizes``), for :func:`interleaved_times`."""
    params = problem.init_params
    batches = stacked_batches(problem, sampler, steps)
    calls = {}
    for name, v in variants.items():
        fn, state = scan_fn(problem, v), v.init(params)
        calls[name] = lambda fn=fn, state=state: fn(params, state, batches, jr.key(1))
    for m in serial_micro_batch_sizes:
        fn = serial_m_sam_scan_fn(problem, rho, m)
        calls[f"serial m-SAM (m={m})"] = lambda fn=fn: fn(params, (), batches, jr.key(1))
    return calls
