"""XLA flop counts of one compiled step: ratios fixed by the algorithms, on any machine."""

from __future__ import annotations

import pytest

import sde_sam as ss
from sde_sam._cost import compiled_cost, serial_m_sam_step_cost, step_cost


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_flop_ratios_follow_the_number_of_passes():
    """SAM is two gradient evaluations (SGD one): SAM/SGD flops in [1.9, 2.1]. RW-SAM adds one forward pass (its score
    at ``x + delta z``) plus O(d + B) for the probe and the weights: between 1 and 1.5 forward passes more than SAM.
    Serial m-SAM (k = 2) does SAM's batch work on two halves plus O(d) per extra micro-batch: within 10 % of SAM at
    B = 128, and closer there than at B = 64. m-SAM (m = 8) in its generic form costs at least SAM (its k perturbed
    copies); the MLP's low-rank form (``Problem.micro_batch_gradient``) costs less than the generic one."""
    import dataclasses

    import jax.numpy as jnp

    problem = ss.problems.digits_mlp(hidden=16)
    generic = dataclasses.replace(problem, micro_batch_gradient=None)
    V, B = ss.variants, 128
    f = {
        name: step_cost(problem, v, B).flops
        for name, v in {"SGD": V.sgd(), "SAM": V.sam(0.05), "RW-SAM": V.rw_sam(0.05), "m-SAM": V.m_sam(0.05, 8)}.items()
    }
    forward = compiled_cost(problem.batch_loss, problem.init_params, problem.take(jnp.arange(B))).flops
    assert 1.9 <= f["SAM"] / f["SGD"] <= 2.1, f
    assert 1.0 <= (f["RW-SAM"] - f["SAM"]) / forward <= 1.5, (f, forward)
    serial = serial_m_sam_step_cost(problem, 0.05, B // 2, B).flops / f["SAM"]
    small = serial_m_sam_step_cost(problem, 0.05, 32, 64).flops / step_cost(problem, V.sam(0.05), 64).flops
    assert abs(serial - 1.0) <= 0.1 and abs(serial - 1.0) < abs(small - 1.0), (serial, small)
    generic_m_sam = step_cost(generic, V.m_sam(0.05, 8), B).flops
    assert generic_m_sam >= f["SAM"], (generic_m_sam, f)
    assert f["m-SAM"] < generic_m_sam, (generic_m_sam, f)


def test_cost_counts_a_known_matmul_and_refuses_bad_micro_batches():
    import jax.numpy as jnp

    c = compiled_cost(lambda a, b: a @ b, jnp.ones((8, 16)), jnp.ones((16, 4)))
    assert c.flops == pytest.approx(2 * 8 * 16 * 4, rel=0.01)
    assert c.bytes_accessed > 0
    with pytest.raises(ValueError, match="micro_batch_size"):
        serial_m_sam_step_cost(ss.problems.digits_mlp(hidden=8), 0.05, 3, 64)


@pytest.mark.parametrize("make", [lambda: ss.variants.sam(0.05), lambda: ss.variants.m_sam(0.05, 4)])
def test_a_counted_program_has_the_counts_of_the_fully_optimized_one(make):
    """:func:`compiled_cost` compiles without optimizing the machine code (:data:`COUNT_OPTIONS`); its flops and
    bytes are those of the program compiled with the default options, which the counts once came from."""
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    problem, variant = ss.problems.digits_mlp(hidden=8), make()
    p = problem.init_params
    args = (p, variant.init(p), problem.take(jnp.arange(16)), jr.key(0))

    def step(p, state, batch, key):
        return variant.gradient(problem, p, state, batch, key)[0]

    full = jax.jit(step).lower(*args).compile().cost_analysis()
    full = full[0] if isinstance(full, (list, tuple)) else full
    assert full is not None
    got = compiled_cost(step, *args)
    assert (got.flops, got.bytes_accessed) == (full["flops"], full["bytes accessed"])
