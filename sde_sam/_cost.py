"""Cost of one step in units that travel: XLA's flop count and bytes accessed of the compiled step.

``jax.jit(fn).lower(*args).compile().cost_analysis()`` counts the operations of the optimized program (the same
on any machine for a given program and backend), so ratios between variants are hardware-independent, unlike wall
time. Loops are counted once per body by XLA, so the costed functions here are single steps, unrolled. The count is
taken from the HLO after XLA's optimization passes, which the code generator's own optimization level does not
change, so the costed programs are compiled with that level at 0 (:data:`COUNT_OPTIONS`): the same counts, about
half the compile time.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr

from ._problems._problem import Problem
from ._variants._variant import Variant, sam

#: Compiler options of a program compiled only to be counted: no optimization of the generated machine code.
COUNT_OPTIONS: dict[str, Any] = {"xla_backend_optimization_level": 0}


class Cost(NamedTuple):
    """XLA's count for one compiled call: ``flops`` (floating-point operations) and ``bytes_accessed``."""

    flops: float
    bytes_accessed: float


def compiled_cost(fn, *args: Any) -> Cost:
    """The flops and bytes accessed of ``jax.jit(fn)`` compiled for ``args`` (NaN where the backend reports none)."""
    analysis = jax.jit(fn).lower(*args).compile(compiler_options=COUNT_OPTIONS).cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older JAX: one dict per computation
        analysis = analysis[0] if analysis else {}
    analysis = analysis or {}
    return Cost(float(analysis.get("flops", math.nan)), float(analysis.get("bytes accessed", math.nan)))


def _batch(problem: Problem, batch_size: int):
    return problem.take(jnp.arange(batch_size) % problem.num_examples)


def step_cost(problem: Problem, variant: Variant, batch_size: int) -> Cost:
    """The cost of one update direction ``G`` of ``variant`` (:meth:`Variant.gradient`) on a batch of ``batch_size``."""
    variant.check(batch_size, problem.num_examples)
    params = problem.init_params

    def step(p, state, batch, key):
        return variant.gradient(problem, p, state, batch, key)[0]

    return compiled_cost(step, params, variant.init(params), _batch(problem, batch_size), jr.key(0))


def step_program(problem: Problem, variant: Variant, batch_size: int) -> str:
    """The lowered text of the step :func:`step_cost` counts: identifies the computation, not the data."""
    params = problem.init_params

    def step(v, p, state, batch, key):
        return v.gradient(problem, p, state, batch, key)[0]

    # the variant as an argument: its hyperparameters are traced, as in a run, so one text serves every value
    lowered = jax.jit(step).lower(variant, params, variant.init(params), _batch(problem, batch_size), jr.key(0))
    return lowered.as_text()


def serial_m_sam_step_cost(problem: Problem, rho: float, micro_batch_size: int, batch_size: int) -> Cost:
    """The cost of one serial m-SAM step: ``k = B/m`` SAM gradients on the micro-batches one after another (a Python
    loop, so XLA counts every one), averaged."""
    if micro_batch_size < 1 or batch_size % micro_batch_size:
        raise ValueError(f"`micro_batch_size`={micro_batch_size} must divide `batch_size`={batch_size}")
    inner, k = sam(rho), batch_size // micro_batch_size

    def step(p, batch, key):
        micro = jax.tree_util.tree_map(lambda a: a.reshape(k, micro_batch_size, *a.shape[1:]), batch)
        total = jax.tree_util.tree_map(jnp.zeros_like, p)
        for j in range(k):
            batch_j = jax.tree_util.tree_map(lambda a, j=j: a[j], micro)
            G = inner.gradient(problem, p, (), batch_j, key)[0]
            total = jax.tree_util.tree_map(lambda t, g: t + g / k, total, G)
        return total

    return compiled_cost(step, problem.init_params, _batch(problem, batch_size), jr.key(0))
