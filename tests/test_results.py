"""Saved results: ``Runs``/``Paths`` round-trip through ``save``/``load`` with their key and config."""

import json
import os
import stat

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_sam as ss


@pytest.fixture(scope="module")
def problem():
    return ss.problems.linear_regression(n=32, d=3)


def _runs(problem, key=0):
    return ss.run_discrete(
        problem,
        ss.variants.sam(0.05),
        ss.WithReplacement(4),
        eta=0.05,
        steps=6,
        num_runs=3,
        key=jr.key(key),
        record=("loss", "param_norm_sq"),  # names are accepted, recorded at every step
    )


def test_run_discrete_accepts_names_and_records_the_key(problem):
    runs = _runs(problem)
    assert runs.values["loss"].shape == (3, 7)
    key = runs.config["key"]
    rebuilt = jr.wrap_key_data(np.asarray(key["data"], np.uint32), impl=key["impl"])  # pyright: ignore[reportArgumentType]
    again = ss.run_discrete(
        problem,
        ss.variants.sam(0.05),
        ss.WithReplacement(4),
        eta=0.05,
        steps=6,
        num_runs=3,
        key=rebuilt,
        record=("loss",),
    )
    np.testing.assert_array_equal(again.values["loss"], runs.values["loss"])


def test_runs_round_trip(problem, tmp_path):
    runs = _runs(problem)
    path = runs.save(tmp_path / "sam")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "sam.npz").st_mode) == 0o644
    meta = json.loads(path.read_text())
    assert meta["config"]["key"]["data"] == runs.config["key"]["data"]
    assert "provenance" in meta
    back = ss.Runs.load(tmp_path / "sam", like=problem.init_params)
    for name in runs.values:
        np.testing.assert_array_equal(back.values[name], runs.values[name])
    np.testing.assert_array_equal(back.diverged, runs.diverged)
    assert back.config == json.loads(json.dumps(runs.config))
    for a, b in zip(
        jax.tree_util.tree_leaves(back.final_params), jax.tree_util.tree_leaves(runs.final_params), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    flat = ss.Runs.load(tmp_path / "sam")  # without `like`: a dict from parameter path to array
    assert isinstance(flat.final_params, dict) and len(flat.final_params) == len(
        jax.tree_util.tree_leaves(problem.init_params)
    )
    with pytest.raises(ValueError, match="Runs"):
        ss.Paths.load(tmp_path / "sam")


def test_paths_round_trip(problem, tmp_path):
    model = ss.sde_model(problem, ss.variants.usam(0.05), ss.WithReplacement(4), eta=0.05, drift="closed_form")
    paths = ss.simulate(model, t1=0.2, num_paths=4, key=jr.key(3), record=("loss",), save_paths=True)
    assert paths.config["paths_per_block"] == 4 and paths.config["key"]["impl"]
    paths.save(tmp_path / "p")
    back = ss.Paths.load(tmp_path / "p", like=problem.init_params)
    assert back.dt == paths.dt  # pyright: ignore[reportAttributeAccessIssue]
    np.testing.assert_array_equal(back.values["loss"], paths.values["loss"])
    for a, b in zip(jax.tree_util.tree_leaves(back.paths), jax.tree_util.tree_leaves(paths.paths), strict=True):  # pyright: ignore[reportAttributeAccessIssue]
        np.testing.assert_array_equal(a, b)


def test_one_run_has_no_standard_error(problem):
    runs = ss.run_discrete(
        problem,
        ss.variants.sgd(),
        ss.WithReplacement(4),
        eta=0.05,
        steps=2,
        num_runs=1,
        key=jr.key(0),
        record=("loss",),
    )
    runs.mean("loss")
    with pytest.raises(ValueError, match="at least 2"):
        runs.stderr("loss")


def test_simulate_refuses_a_raw_key(problem):
    model = ss.sde_model(problem, ss.variants.sgd(), ss.WithReplacement(4), eta=0.05)
    with pytest.raises(TypeError, match="`key`"):
        ss.simulate(model, t1=0.1, key=jnp.zeros(2, jnp.uint32))


def test_figures_are_written_atomically_with_mode_0644(tmp_path):
    import matplotlib.pyplot as plt

    from figures._common import save

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    paths = save(fig, tmp_path, "fig")
    assert [p.name for p in paths] == ["fig.png", "fig.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.pdf", "fig.png"]  # no temporary file left behind
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in paths)
