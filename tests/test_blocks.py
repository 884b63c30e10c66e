"""The default block of paths/runs (sde_sam._blocks): the rule, and results equal to the explicit block."""

import json

import jax.random as jr
import numpy as np
import pytest
from helpers import WRONG_TYPE

import sde_sam as ss
from sde_sam import _blocks
from sde_sam._sde import _simulate as sde_simulate
from sde_sam._sde._simulate import path_step_flops
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
    flops = path_step_flops(model, 0.05)
    assert flops > 0
    monkeypatch.setitem(_blocks.WORK_FLOPS, "cpu", 8 * flops)
    kw = {"t1": 0.2, "num_paths": 512, "key": jr.key(3), "record": ("loss",), "progress": False}
    got = ss.simulate(model, **kw)
    assert got.config["paths_per_block"] == 8
    ref = ss.simulate(model, paths_per_block=8, **kw)
    np.testing.assert_array_equal(got.values["loss"], ref.values["loss"])
    runs = ss.run_discrete(
        pr,
        ss.variants.usam(0.05),
        ss.WithReplacement(8),
        eta=0.05,
        steps=4,
        num_runs=512,
        key=jr.key(0),
        progress=False,
    )
    per_run = run_step_flops(pr, ss.variants.usam(0.05), ss.WithReplacement(8))
    assert runs.config["runs_per_block"] == min(512, int(8 * flops // per_run))


@pytest.mark.parametrize("num_paths", [4, 6])
def test_small_calls_keep_every_path_in_one_block(num_paths):
    pr = ss.problems.linear_regression(n=32, d=4)
    model = ss.sde_model(pr, ss.variants.sgd(), ss.WithReplacement(4), eta=0.1)
    paths = ss.simulate(model, t1=0.2, num_paths=num_paths, key=jr.key(0), progress=False)
    assert paths.config["paths_per_block"] == num_paths


def test_candidate_blocks_are_divisors_around_the_rule():
    # rule/32 .. 8x rule: the best block of a held-out case was a 32nd of the rule's
    assert _blocks.candidate_blocks(2048, 512) == (16, 32, 64, 128, 256, 512, 1024, 2048)
    assert _blocks.candidate_blocks(16, 2) == (1, 2, 4, 8, 16)
    # 1001 = 7 * 11 * 13; limits 3, 6, 12, 25, 50, 100, 200, 400, 800 give 1, 1, 11, 13, 13, 91, 143, 143, 143
    assert _blocks.candidate_blocks(1001, 100) == (1, 11, 13, 91, 143)
    assert _blocks.candidate_blocks(1, 1) == (1,)


def test_calibrated_block_takes_the_fastest_candidate_and_keeps_it(tmp_path):
    """Fake timings with their minimum at 128 (and one failed candidate): 128 is chosen; a second call with the
    same program is answered from the process, a call in a fresh process (memo cleared) from the folder, both
    without timing; a different program or path count times again; a corrupt file is timed again and rewritten."""
    seconds = {16: 4.0, 32: 3.5, 64: 3.0, 128: 1.0, 256: 2.0, 512: float("nan"), 1024: 5.0, 2048: 6.0}
    timed = []

    def time_block(b):
        timed.append(b)
        return seconds[b]

    _blocks._CALIBRATED.clear()
    got = _blocks.calibrated_block(2048, 512, time_block, program="p", cache_dir=tmp_path)
    assert got == 128 and sorted(timed) == sorted(seconds)
    (kept,) = tmp_path.iterdir()
    record = json.loads(kept.read_text())
    assert record["block"] == 128 and "512" not in record["seconds_per_path_step"]
    timed.clear()
    assert _blocks.calibrated_block(2048, 512, time_block, program="p", cache_dir=tmp_path) == 128
    _blocks._CALIBRATED.clear()
    assert _blocks.calibrated_block(2048, 512, time_block, program="p", cache_dir=tmp_path) == 128
    assert timed == []
    seconds[128] = 9.0
    assert _blocks.calibrated_block(2048, 512, time_block, program="q", cache_dir=tmp_path) == 256
    assert len(timed) == 8
    _blocks._CALIBRATED.clear()
    kept.write_text("{not json")
    assert _blocks.calibrated_block(2048, 512, time_block, program="p", cache_dir=tmp_path) == 256
    assert json.loads(kept.read_text())["block"] == 256
    kept.write_text(json.dumps({"block": 3}))  # not a divisor of 2048: not trusted
    _blocks._CALIBRATED.clear()
    assert _blocks.calibrated_block(2048, 512, time_block, program="p", cache_dir=tmp_path) == 256


def test_calibrated_block_without_program_is_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv(_blocks.CACHE_ENV, str(tmp_path))
    calls = []
    assert _blocks.calibrated_block(4, 2, lambda b: calls.append(b) or 1.0 / b) == 4
    assert _blocks.calibrated_block(4, 2, lambda b: calls.append(b) or 1.0 / b) == 4
    assert calls == [1, 2, 4, 1, 2, 4] and list(tmp_path.iterdir()) == []


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_simulate_calibrate_times_real_blocks_and_equals_the_explicit_block(tmp_path, monkeypatch):
    """``paths_per_block="calibrate"`` on a real model: the block it records is one of the candidates, its
    paths equal a run with that block bit for bit, and the choice is kept in ``SDE_SAM_BLOCK_CACHE``."""
    monkeypatch.setenv(_blocks.CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(_blocks.TIMING_FLOPS, "cpu", 1e6)  # short timings: this checks the plumbing, not speed
    _blocks._CALIBRATED.clear()
    pr = ss.problems.linear_regression(n=64, d=8)
    model = ss.sde_model(pr, ss.variants.usam(0.05), ss.WithReplacement(8), eta=0.05, drift="closed_form")
    kw = {"t1": 0.1, "num_paths": 16, "key": jr.key(5), "record": ("loss",), "progress": False}
    got = ss.simulate(model, paths_per_block="calibrate", **kw)
    block = got.config["paths_per_block"]
    assert block in _blocks.candidate_blocks(16, 16)
    ref = ss.simulate(model, paths_per_block=block, **kw)
    np.testing.assert_array_equal(got.values["loss"], ref.values["loss"])
    (kept,) = tmp_path.iterdir()
    assert json.loads(kept.read_text())["block"] == block
    assert ss.simulate(model, paths_per_block="rule", **kw).config["paths_per_block"] == 16  # small: all at once


def test_long_calls_calibrate_by_default(monkeypatch):
    """Above ``CALIBRATE_FLOPS`` of work the default calibrates (the fake timer's fastest block, 128, is taken);
    below it the rule decides."""
    pr = ss.problems.linear_regression(n=256, d=16)
    model = ss.sde_model(pr, ss.variants.usam(0.05), ss.WithReplacement(8), eta=0.05, drift="closed_form")
    flops = path_step_flops(model, 0.05)
    monkeypatch.setattr(sde_simulate, "time_paths", lambda m, dt, b, f: abs(b - 128) + 1.0)
    _blocks._CALIBRATED.clear()
    kw = {"t1": 0.2, "num_paths": 512, "key": jr.key(3), "record": ("loss",), "progress": False}
    monkeypatch.setitem(_blocks.CALIBRATE_FLOPS, "cpu", 512 * 4 * flops * 1.01)  # the call's work is 512 * 4 * flops
    assert _blocks.WORK_FLOPS["cpu"] / flops > 512
    assert ss.simulate(model, **kw).config["paths_per_block"] == 512  # the rule: its cap
    monkeypatch.setitem(_blocks.CALIBRATE_FLOPS, "cpu", 512 * 4 * flops * 0.99)
    assert ss.simulate(model, **kw).config["paths_per_block"] == 128


@pytest.mark.parametrize("bad", ["fast", 0, -2, 2.5])
def test_paths_per_block_bad_values_name_the_argument(bad):
    """A wrong type meets the annotation check (under the test suite's jaxtyping hook) before the library's."""
    pr = ss.problems.linear_regression(n=32, d=4)
    model = ss.sde_model(pr, ss.variants.sgd(), ss.WithReplacement(4), eta=0.1)
    with pytest.raises(WRONG_TYPE, match="paths_per_block"):
        ss.simulate(model, t1=0.2, num_paths=4, key=jr.key(0), paths_per_block=bad, progress=False)


def test_balanced_candidates_for_padded_runs():
    # 1000 runs, rule 100: limits 3, 6, 12, 25, 50, 100, 200, 400, 800 give equal blocks of
    # ceil(1000 / ceil(1000 / limit))
    assert _blocks.candidate_blocks(1000, 100, divides=False) == (3, 6, 12, 25, 50, 100, 200, 334, 500)
    assert _blocks.balanced_block(130, 100) == 65 and _blocks.balanced_block(7, 100) == 7


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_run_discrete_calibrate_equals_the_explicit_block(tmp_path, monkeypatch):
    """``runs_per_block="calibrate"``: the recorded block is a balanced candidate, the runs equal a run with that
    block bit for bit, and the choice is kept on disk; a bad string names the argument."""
    monkeypatch.setenv(_blocks.CACHE_ENV, str(tmp_path))
    monkeypatch.setitem(_blocks.TIMING_FLOPS, "cpu", 1e6)
    _blocks._CALIBRATED.clear()
    pr = ss.problems.linear_regression(n=64, d=8)
    kw = {
        "eta": 0.05,
        "steps": 6,
        "num_runs": 12,
        "key": jr.key(2),
        "record": ss.observables("loss", every=3),
        "progress": False,
    }
    got = ss.run_discrete(pr, ss.variants.sam(0.05), ss.WithReplacement(8), runs_per_block="calibrate", **kw)
    block = got.config["runs_per_block"]
    rule = _blocks.balanced_block(
        12, _blocks.target_block(run_step_flops(pr, ss.variants.sam(0.05), ss.WithReplacement(8)))
    )
    assert block in _blocks.candidate_blocks(12, rule, divides=False)
    ref = ss.run_discrete(pr, ss.variants.sam(0.05), ss.WithReplacement(8), runs_per_block=block, **kw)
    np.testing.assert_array_equal(got.values["loss"], ref.values["loss"])
    (kept,) = tmp_path.iterdir()
    assert json.loads(kept.read_text())["block"] == block
    with pytest.raises(WRONG_TYPE, match="runs_per_block"):
        ss.run_discrete(pr, ss.variants.sam(0.05), ss.WithReplacement(8), runs_per_block="fast", **kw)  # pyright: ignore[reportArgumentType]
