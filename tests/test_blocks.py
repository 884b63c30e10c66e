"""The default block of paths/runs (sde_sam._blocks): the rule, and results equal to the explicit block."""

import jax.random as jr
import numpy as np
import pytest

import sde_sam as ss
from sde_sam import _blocks
from sde_sam._training._runner import run_step_flops


def test_largest_divisor_at_most_matches_brute_force():
    for n in range(1, 200):
        for limit in (1, 2, 3, 7, 16, 64, 500):
            want = max(d for d in range(1, n + 1) if n % d == 0 and d <= limit)
            assert _blocks.largest_divisor_at_most(n, limit) == want, (n, limit)


def test_rule_on_cpu():
    def never():
        raise AssertionError("a small call must not count flops")

    assert _blocks.default_block(16, 256 * 8, never) == 16  # small: every path at once, no compilation
    work, cap = _blocks.WORK_FLOPS["cpu"], _blocks.MAX_BLOCK["cpu"]
    assert _blocks.target_block(work / 4) == 4 and _blocks.target_block(work * 10) == 1
    assert _blocks.target_block(1.0) == cap and _blocks.target_block(0.0) == cap  # no count: the cap
    assert _blocks.default_block(1024, 10**6, lambda: work / 100) == 64
    assert _blocks.default_block(1001, 10**6, lambda: work / 100) == 91  # 1001 = 7 * 11 * 13: 91 is the largest <= 100
    assert _blocks.default_block(1000, 10**6, lambda: work / 100, divides=False) == 100  # padded runs: balanced
    assert _blocks.default_block(130, 10**6, lambda: work / 100, divides=False) == 65


def test_simulate_default_block_is_recorded_and_equals_the_explicit_block(monkeypatch):
    """A call above the small-call threshold gets the rule's block (here forced to 8 by its work constant);
    its paths equal a run with ``paths_per_block=8`` bit for bit, and the config records 8."""
    pr = ss.problems.linear_regression(n=256, d=16)
    model = ss.sde_model(pr, ss.variants.usam(0.05), ss.WithReplacement(8), eta=0.05, drift="closed_form")
    flops = ss.sde.path_step_flops(model, 0.05)
    assert flops > 0
    monkeypatch.setitem(_blocks.WORK_FLOPS, "cpu", 8 * flops)
    kw = dict(t1=0.2, num_paths=512, key=jr.key(3), record=("loss",), progress=False)
    got = ss.simulate(model, **kw)
    assert got.config["paths_per_block"] == 8
    ref = ss.simulate(model, paths_per_block=8, **kw)
    np.testing.assert_array_equal(got.values["loss"], ref.values["loss"])
    runs = ss.run_discrete(pr, ss.variants.usam(0.05), ss.WithReplacement(8), eta=0.05, steps=4, num_runs=512,
                           key=jr.key(0), progress=False)
    per_run = run_step_flops(pr, ss.variants.usam(0.05), ss.WithReplacement(8))
    assert runs.config["runs_per_block"] == min(512, int(8 * flops // per_run))


@pytest.mark.parametrize("num_paths", [4, 6])
def test_small_calls_keep_every_path_in_one_block(num_paths):
    pr = ss.problems.linear_regression(n=32, d=4)
    model = ss.sde_model(pr, ss.variants.sgd(), ss.WithReplacement(4), eta=0.1)
    paths = ss.simulate(model, t1=0.2, num_paths=num_paths, key=jr.key(0), progress=False)
    assert paths.config["paths_per_block"] == num_paths
