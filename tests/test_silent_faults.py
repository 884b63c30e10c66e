"""Regression tests for the faults of the reliability sweep: no silent NaN, no silent wrong value, no computed
result thrown away, and each bad input refused with its argument named before any expensive work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_sam as ss
from sde_sam import cli
from sde_sam._io import CorruptResult, load_result, result_paths, save_result


def _nan_past_zero(p, ex):
    """Finite loss while ``p[0] <= 0``, NaN beyond: the parameters stay finite (the NaN branch has no gradient)."""
    return jnp.where(p[0] > 0, jnp.nan, jnp.sum((p - ex) ** 2))


def _nan_problem():
    data = jnp.asarray([[1.0, 0.0], [2.0, 0.5], [1.5, -0.5], [3.0, 1.0]])
    return ss.Problem(_nan_past_zero, data, jnp.asarray([-2.0, 0.0]), name="nan-past-zero")


# -- 1: a loss that turns NaN while the parameters stay finite ----------------------------------------------------


def test_a_loss_turning_nan_with_finite_params_counts_as_divergence_in_runs():
    problem = _nan_problem()
    runs = ss.run_discrete(
        problem,
        ss.variants.sgd(),
        ss.WithReplacement(2),
        eta=0.1,
        steps=40,
        num_runs=4,
        key=jr.key(0),
        record=ss.observables("loss", every=2),
        progress=False,
    )
    assert runs.num_diverged == 4  # every run walks past p[0] = 0 (the data's mean of coordinate 0 is 1.9)
    assert np.all(runs.diverged_step > 0)
    assert np.all(np.isfinite(jax.tree_util.tree_leaves(runs.final_params)[0]))  # finite parameters, yet diverged
    with pytest.raises(ValueError, match="all 4 runs diverged"):
        runs.mean("loss")


def test_a_loss_turning_nan_counts_as_divergence_in_paths():
    problem = _nan_problem()
    model = ss.sde_model(problem, ss.variants.sgd(), ss.WithReplacement(2), eta=0.1)
    paths = ss.simulate(
        model, t1=4.0, num_paths=4, key=jr.key(1), record=ss.observables("loss", every=2), progress=False
    )
    assert paths.num_diverged == 4 and np.all(paths.diverged_step > 0)


def test_runs_that_stay_finite_are_kept_and_averaged():
    """The rule above takes nothing from a healthy run: same loss as a run of the plain quadratic."""
    data = jnp.asarray([[1.0, 0.0], [2.0, 0.5]])
    finite = ss.Problem(lambda p, ex: jnp.sum((p - ex) ** 2), data, jnp.asarray([-2.0, 0.0]))
    runs = ss.run_discrete(
        finite,
        ss.variants.sgd(),
        ss.WithReplacement(2),
        eta=0.1,
        steps=10,
        num_runs=2,
        key=jr.key(0),
        record=ss.observables("loss", every=2),
        progress=False,
    )
    assert runs.num_diverged == 0 and np.all(np.isfinite(runs.mean("loss")))


# -- 2, 10, 11, 5: checks at construction ----------------------------------------------------------------------


def _quadratic(**kw):
    data = {"x": jnp.arange(12.0).reshape(6, 2), "y": jnp.asarray([0, 1, 0, 1, 1, 0])}
    return ss.Problem(lambda p, ex: jnp.sum((p - ex["x"]) ** 2), data, jnp.zeros(2), **kw)


def test_accuracy_fn_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="`accuracy_fn` must give a number in \\[0, 1\\]"):
        _quadratic(accuracy_fn=lambda p, ex: jnp.sum(p - ex["x"]) * 5)
    with pytest.raises(TypeError, match="`accuracy_fn` must return one number per example"):
        _quadratic(accuracy_fn=lambda p, ex: (p > ex["x"]).astype(jnp.float32))  # a vector per example
    ok = _quadratic(accuracy_fn=lambda p, ex: (jnp.sum(p) >= ex["x"][0]).astype(jnp.float32))
    assert 0.0 <= float(ok.accuracy(ok.init_params)) <= 1.0


def test_test_data_is_checked_at_construction():
    with pytest.raises(ValueError, match="`test_data` has pytree structure"):
        _quadratic(test_data={"x": jnp.ones((3, 2))})  # "y" missing
    with pytest.raises(ValueError, match="`test_data` leaf \\['x'\\] has examples of shape \\(3,\\)"):
        _quadratic(test_data={"x": jnp.ones((4, 3)), "y": jnp.zeros(4)})


def test_a_loss_not_finite_at_the_start_is_refused():
    with pytest.raises(ValueError, match="`loss_fn` is not finite at `init_params`"):
        ss.Problem(lambda p, ex: jnp.log(p[0] * ex[0]), jnp.ones((4, 2)), jnp.asarray([-1.0, 0.0]))


def test_float64_parameters_without_x64_warn_and_print_what_runs():
    if jax.config.read("jax_enable_x64"):
        pytest.skip("x64 is on in this process")
    with pytest.warns(UserWarning, match="runs them in float32"):
        problem = ss.Problem(lambda p, ex: jnp.sum((p - ex) ** 2), np.ones((4, 2)), np.zeros(2, np.float64))
    assert "float32" in repr(problem) and "float64" not in repr(problem)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ss.Problem(lambda p, ex: jnp.sum((p - ex) ** 2), np.ones((4, 2)), np.zeros(2, np.float32))


# -- 3: schedules ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schedule, word",
    [(lambda k: 1.0 - k.astype(jnp.float32) / 5.0, "-"), (lambda k: jnp.log(k.astype(jnp.float32) - 3.0), "nan")],
)
def test_a_negative_or_nan_schedule_is_refused_before_running(schedule, word):
    problem = ss.problems.linear_regression(n=16, d=2)
    with pytest.raises(ValueError, match="`schedule` must give a finite learning-rate multiplier >= 0") as err:
        ss.run_discrete(
            problem,
            ss.variants.sgd(),
            ss.WithReplacement(4),
            eta=0.1,
            steps=10,
            num_runs=2,
            key=jr.key(0),
            schedule=schedule,
            progress=False,
        )
    assert word in str(err.value)


# -- 4, 8, 12: results on disk --------------------------------------------------------------------------------------


def test_a_result_without_its_checksum_or_with_bad_arrays_is_corrupt(tmp_path):
    path = tmp_path / "r"
    save_result(path, {"a": np.arange(3)}, {"kind": "x"})
    json_path = result_paths(path)[0]
    meta = json.loads(json_path.read_text())
    for broken in (
        {k: v for k, v in meta.items() if k != "arrays_sha256"},
        meta | {"arrays": 7},
        meta | {"arrays": [1, 2]},
    ):
        json_path.write_text(json.dumps(broken))
        with pytest.raises(CorruptResult):
            load_result(path)


def test_object_arrays_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError, match="array 'bad' holds Python objects"):
        save_result(tmp_path / "r", {"bad": np.array([{"a": 1}], dtype=object)}, {})
    assert list(tmp_path.iterdir()) == []


def test_runs_load_checks_leaf_shapes_against_like(tmp_path):
    problem = ss.problems.linear_regression(n=16, d=3)
    runs = ss.run_discrete(
        problem, ss.variants.sgd(), ss.WithReplacement(4), eta=0.1, steps=4, num_runs=2, key=jr.key(0), progress=False
    )
    runs.save(tmp_path / "runs")
    assert ss.Runs.load(tmp_path / "runs", like=problem.init_params).final_params is not None
    wrong = jax.tree_util.tree_map(lambda a: jnp.zeros((*np.shape(a), 2)), problem.init_params)
    with pytest.raises(ValueError, match="`like` does not match the saved final_params"):
        ss.Runs.load(tmp_path / "runs", like=wrong)
    with pytest.raises(ValueError, match=r"read it with sde_sam\.Runs\.load"):
        ss.Paths.load(tmp_path / "runs")


# -- 7, 9: the simulate command keeps what it computed ------------------------------------------------------------


def test_simulate_with_one_path_prints_and_writes_what_paths_load_reads(tmp_path, capsys):
    out = tmp_path / "one"
    code = cli.main(
        [
            "simulate",
            "--problem",
            "quadratic",
            "--variant",
            "sgd",
            "--t1",
            "0.2",
            "--every",
            "2",
            "--paths",
            "1",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    text = capsys.readouterr().out
    assert code == 0 and "wrote" in text and "nan" in text  # one path: the table's stderr column is nan
    paths = ss.Paths.load(out)
    assert paths.num_paths == 1 and paths.values["loss"].shape[0] == 1  # pyright: ignore[reportAttributeAccessIssue]


# -- Ctrl-C from the command line's first line ----------------------------------------------------------------------


def _cli_env():
    return dict(os.environ, PYTHONUNBUFFERED="1")


@pytest.mark.filterwarnings("ignore:os.fork")
def test_ctrl_c_while_the_command_line_imports_ends_cleanly():
    """SIGINT delivered at a fixed point inside the package's import (when ``jax`` starts loading, found by an
    import hook, not by a sleep): status 130, one line, no traceback."""
    code = (
        "import os, signal, sys\n"
        "sys.argv = ['sde-sam', 'simulate']\n"
        "class Hook:\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'jax':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Hook())\n"
        "from sde_sam.cli import main\n"
        "sys.exit(main())\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        timeout=300,
        env=_cli_env(),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    err = proc.stderr.decode()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# -- 12: unclear errors -----------------------------------------------------------------------------------------------


def test_options_that_do_not_apply_are_refused(capsys):
    assert cli.main(["simulate", "--variant", "sam", "--m", "2"]) == 2
    assert "--m applies to the variants with micro-batches (m-usam, m-sam, asam), not to sam" in capsys.readouterr().err
    assert cli.main(["simulate", "--variant", "sgd", "--rho", "0.1"]) == 2
    assert "--rho does not apply to sgd" in capsys.readouterr().err


def test_the_command_line_reads_a_variants_options_off_its_factory():
    """m-SAM requires a micro-batch size (the command's default when ``--m`` is absent); ASAM takes one when given."""
    import argparse

    def opts(variant, m=None, rho=None):
        return cli.variant_options(argparse.Namespace(variant=variant, m=m, rho=rho), default_m=4)

    assert opts("m-sam") == {"rho": 0.05, "micro_batch_size": 4} and opts("m_sam", m=2)["micro_batch_size"] == 2
    assert opts("asam") == {"rho": 0.05} and opts("asam", m=8, rho=0.1) == {"rho": 0.1, "micro_batch_size": 8}
    assert opts("sgd") == {}
    with pytest.raises(ValueError, match="unknown variant 'adam'; valid names: sgd"):
        opts("adam")


def test_parallel_cli_errors_name_the_option(capsys):
    from sde_sam import parallel_cli

    for argv, option in (
        (["--quantiles", "abc"], "--quantiles"),
        (["--problem-kw", "{bad"], "--problem-kw"),
        (["--variant-kw", "[1]"], "--variant-kw"),
    ):
        with pytest.raises(SystemExit):
            parallel_cli.build_parser().parse_args(argv)
        err = capsys.readouterr().err
        assert option in err and "Traceback" not in err, err
    assert parallel_cli.build_parser().parse_args(["--quantiles", "0.1,0.9"]).quantiles == (0.1, 0.9)


def test_help_shows_defaults_of_zero_and_no_tuples():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert "(default: 0)" in " ".join(sub["simulate"].format_help().split())  # --seed 0 was hidden as False  # pyright: ignore[reportIndexIssue, reportOptionalSubscript]
    train_help = " ".join(sub["train"].format_help().split())  # pyright: ignore[reportIndexIssue, reportOptionalSubscript]
    assert "(0, 1)" not in train_help and "--no-progress" in train_help
    assert sub["train"].parse_args(["--no-progress"]).seeds == (0, 1)  # pyright: ignore[reportIndexIssue, reportOptionalSubscript]


def test_momentum_out_of_range_names_momentum():
    problem = ss.problems.linear_regression(n=16, d=2)
    with pytest.raises(ValueError, match="`momentum` must be a number in \\[0, 1\\)"):
        ss.run_discrete(
            problem,
            ss.variants.sgd(),
            ss.WithReplacement(4),
            eta=0.1,
            steps=2,
            key=jr.key(0),
            momentum=1.0,
            progress=False,
        )


def test_an_accuracy_leaving_zero_one_along_the_run_is_refused():
    """``accuracy_fn`` is checked at ``init_params`` at construction; a score that leaves [0, 1] later (here 0 at
    the start, above 1 after a few steps) is refused when recorded, in runs and in paths alike."""
    data = {"x": jnp.arange(12.0).reshape(6, 2)}
    problem = ss.Problem(
        lambda p, ex: jnp.sum((p - ex["x"]) ** 2),
        data,
        jnp.zeros(2),
        accuracy_fn=lambda p, ex: jnp.clip(jnp.sum(p), 0.0, 100.0) / 2.0,
    )
    record = ss.observables("loss", "accuracy", every=10)
    with pytest.raises(ValueError, match=r"observable 'accuracy' recorded .* outside \[0, 1\].*`accuracy_fn`"):
        ss.run_discrete(
            problem,
            ss.variants.sgd(),
            ss.WithReplacement(2),
            eta=0.05,
            steps=30,
            num_runs=2,
            key=jr.key(0),
            record=record,
            progress=False,
        )
    model = ss.sde_model(problem, ss.variants.sgd(), ss.WithReplacement(2), eta=0.05)
    with pytest.raises(ValueError, match="observable 'accuracy' recorded"):
        ss.simulate(model, t1=1.5, num_paths=2, key=jr.key(1), record=record, progress=False)


def test_the_training_recorder_refuses_an_accuracy_outside_zero_one():
    """The training recorder's evaluation (``train``'s observables at saved parameters) holds the same check."""
    from sde_sam._training._train import Estimators, evaluate

    data = {"x": jnp.arange(12.0).reshape(6, 2)}
    problem = ss.Problem(
        lambda p, ex: jnp.sum((p - ex["x"]) ** 2),
        data,
        jnp.zeros(2),
        accuracy_fn=lambda p, ex: jnp.clip(jnp.sum(p), 0.0, 100.0) / 2.0,
    )
    params = jnp.stack([jnp.zeros(2), jnp.full(2, 3.0)])  # accuracy 0 (valid), then 3 (not a 0/1 score)
    with pytest.raises(ValueError, match=r"observable 'accuracy' recorded 3 at index \(1,\).*`accuracy_fn`"):
        evaluate(Estimators(), ["loss", "accuracy"], problem, params)
    assert evaluate(Estimators(), ["accuracy"], problem, params[:1])["accuracy"].tolist() == [0.0]


@pytest.mark.parametrize(
    ("call", "valid"),
    [
        (lambda p, k: ss.noise.sigma_top_eigs(p, p.init_params, 2, k, method="power"), "'randomized', 'lanczos'"),
        (
            lambda p, k: ss.curvature.alignment(p, p.init_params, k, k=2, method="dense"),
            "'auto', 'exact', 'stochastic'",
        ),
        (
            lambda p, k: ss.noise.tail_index_from_samples(np.ones((16, 2)), key=k, method="pickands"),  # pyright: ignore[reportArgumentType]
            "'stable', 'hill'",
        ),
    ],
)
def test_an_unknown_method_is_named_with_the_valid_ones(call, valid):
    problem = ss.problems.linear_regression(n=16, d=3, seed=0)
    with pytest.raises(ValueError, match=f"`method` must be one of {valid}, got "):
        call(problem, jr.key(0))
