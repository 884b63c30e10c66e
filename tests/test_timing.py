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
    for a, b in zip(jax.tree_util.tree_leaves(vmapped), jax.tree_util.tree_leaves(serial), strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_interleaved_times_and_ratios():
    calls = {"a": lambda: jax.numpy.ones(3), "b": lambda: jax.numpy.zeros(3)}
    samples = interleaved_times(calls, repeats=3, steps=2)
    assert set(samples) == {"a", "b"} and all(len(s) == 3 and min(s) > 0 for s in samples.values())
    assert median_ratio(samples, "a", "a") == 1.0


def test_interleaved_times_shuffles_the_order_reproducibly():
    # every round times every call once, in an order drawn from the seed, so that neither a call's position nor
    # the call timed before it is fixed (a fixed order biases the call timed after a given one)
    def rounds_of(seed):
        log = []
        calls = {name: (lambda name=name: log.append(name) or jax.numpy.ones(1)) for name in "abcd"}
        samples = interleaved_times(calls, repeats=12, steps=1, seed=seed)
        assert all(len(s) == 12 for s in samples.values())
        timed = log[4:]  # after the four warm-up calls
        return [tuple(timed[i : i + 4]) for i in range(0, 48, 4)]

    rounds = rounds_of(0)
    assert all(sorted(r) == list("abcd") for r in rounds)
    assert rounds == rounds_of(0) and rounds != rounds_of(1)
    assert len({r[0] for r in rounds}) > 1 and len({r[1] for r in rounds}) > 1
    before_b = {r[r.index("b") - 1] for r in rounds if r.index("b") > 0}
    assert len(before_b) > 1


def test_interleaved_times_divide_by_each_calls_own_steps(monkeypatch):
    """A mapping of steps: each call's time is divided by its own number of steps (a clock that advances 1 s per
    reading makes every call last exactly 1 s)."""
    import itertools

    from sde_sam._training import _timing

    clock = itertools.count()
    monkeypatch.setattr(_timing.time, "perf_counter", lambda: float(next(clock)))
    calls = {"a": lambda: jax.numpy.ones(1), "b": lambda: jax.numpy.ones(1)}
    samples = interleaved_times(calls, repeats=3, steps={"a": 2, "b": 4})
    assert samples == {"a": [0.5] * 3, "b": [0.25] * 3}
