"""The serial m-SAM used as the cost reference computes the same update as the vmapped m-SAM."""

import jax
import jax.random as jr
import numpy as np
from helpers import user_problem

import sde_sam as ss
from sde_sam._training._timing import interleaved_times, median_ratio, scan_fn, serial_m_sam_scan_fn, stacked_batches


def test_serial_m_sam_equals_vmapped_m_sam():
    problem = user_problem()
    batches = stacked_batches(problem, ss.WithoutReplacement(4), 3)
    params = problem.init_params
    vmapped = scan_fn(problem, ss.variants.m_sam(0.1, 2))(params, (), batches, jr.key(0))
    serial = serial_m_sam_scan_fn(problem, 0.1, 2)(params, (), batches, jr.key(0))
    for a, b in zip(jax.tree_util.tree_leaves(vmapped), jax.tree_util.tree_leaves(serial)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_interleaved_times_and_ratios():
    calls = {"a": lambda: jax.numpy.ones(3), "b": lambda: jax.numpy.zeros(3)}
    samples = interleaved_times(calls, repeats=3, steps=2)
    assert set(samples) == {"a", "b"} and all(len(s) == 3 and min(s) > 0 for s in samples.values())
    assert median_ratio(samples, "a", "a") == 1.0


def test_interleaved_times_rotates_the_order():
    # every call takes every position once over n rounds (a fixed order biases the call timed after another one)
    log = []
    calls = {name: (lambda name=name: log.append(name) or jax.numpy.ones(1)) for name in "abc"}
    interleaved_times(calls, repeats=3, steps=1)
    timed = log[3:]  # after the three warm-up calls
    rounds = [timed[i : i + 3] for i in range(0, 9, 3)]
    assert rounds == [list("abc"), list("bca"), list("cab")]
    for position in range(3):
        assert {r[position] for r in rounds} == set("abc")
