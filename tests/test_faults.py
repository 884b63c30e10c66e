"""Regression tests for the faults a new user met: each bad input is refused with a message naming it."""

import argparse
import os
import stat
import subprocess
import sys
from pathlib import Path

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import WRONG_TYPE
from hypothesis import HealthCheck, given, settings

import sde_sam as ss
from sde_sam import cli
from sde_sam._cli_support import seeds


@pytest.fixture(scope="module")
def problem():
    return ss.problems.linear_regression(n=32, d=3)


def test_estimators_refuse_a_wrong_tree(problem):
    with pytest.raises(ValueError, match="`params`"):
        ss.noise.trace_sigma(problem, {"w": jnp.ones(3)})
    with pytest.raises(ValueError, match="`v`"):
        ss.curvature.hvp(problem, problem.init_params, jnp.ones(4))
    with pytest.raises(TypeError, match="`problem`"):
        ss.curvature.trace_hessian("problem", problem.init_params, jr.key(0))


def test_float64_without_x64_is_refused(problem):
    if jax.config.read("jax_enable_x64"):
        pytest.skip("x64 is on in this process")
    with pytest.raises(ValueError, match="jax_enable_x64"):
        problem.with_dtype(jnp.float64)
    with pytest.raises(ValueError, match="jax_enable_x64"):
        ss.sde_model(problem, ss.variants.sgd(), ss.WithReplacement(4), dtype=jnp.float64)


def test_counts_without_a_standard_error_are_refused(problem):
    x = problem.init_params
    with pytest.raises(ValueError, match="num_batches"):
        ss.noise.trace_sigma_minibatch(problem, x, ss.WithReplacement(4), jr.key(0), num_batches=1)
    with pytest.raises(ValueError, match="num_samples"):
        ss.sde.general_drift(problem, ss.variants.m_sam(0.1, 2), ss.WithReplacement(4), x, key=jr.key(0), num_samples=1)
    with pytest.raises(ValueError, match="num_samples"):
        ss.sde_model(problem, ss.variants.sam(0.1), ss.WithReplacement(4), diffusion="empirical", num_samples=1)
    model = ss.sde_model(problem, ss.variants.sgd(), ss.WithReplacement(4))
    with pytest.raises(ValueError, match="num_paths"):
        ss.parallel.simulate_moments(model, t1=0.1, num_paths=1, key=jr.key(0))


def test_sam_on_refuses_an_empty_mask(problem):
    variant = ss.variants.sam_on(0.05)  # linear regression has no normalization layer
    with pytest.raises(ValueError, match="selects none"):
        ss.run_discrete(problem, variant, ss.WithReplacement(4), eta=0.1, steps=2, key=jr.key(0), record=("loss",))
    with pytest.raises(ValueError, match="selects none"):
        ss.sde_model(problem, variant, ss.WithReplacement(4))
    asked = ss.variants.sam_on(0.05, allow_empty_mask=True)
    runs = ss.run_discrete(
        problem, asked, ss.WithReplacement(4), eta=0.1, steps=2, num_runs=2, key=jr.key(0), record=("loss",)
    )
    sgd = ss.run_discrete(
        problem, ss.variants.sgd(), ss.WithReplacement(4), eta=0.1, steps=2, num_runs=2, key=jr.key(0), record=("loss",)
    )
    np.testing.assert_allclose(runs.values["loss"], sgd.values["loss"], rtol=1e-6)


def test_numpy_scalars_are_accepted_and_stored_as_floats():
    v = ss.variants.rw_sam(np.float32(0.05), fd_delta=np.float32(1e-3))
    assert type(v.rho) is float and type(v.rule.fd_delta) is float  # pyright: ignore[reportAttributeAccessIssue]


def test_a_loss_returning_a_tuple_is_refused():
    data = {"x": jnp.ones((4, 2)), "y": jnp.ones(4)}
    with pytest.raises(TypeError, match="one scalar"):
        ss.Problem(lambda p, ex: (jnp.sum(p * ex["x"]), 0.0), data, jnp.ones(2))  # pyright: ignore[reportArgumentType]


def test_variants_get_accepts_m():
    assert ss.variants.get("m-sam", rho=0.05, m=4) == ss.variants.m_sam(0.05, micro_batch_size=4)
    with pytest.raises(TypeError, match="not both"):
        ss.variants.get("m-sam", rho=0.05, m=4, micro_batch_size=4)
    with pytest.raises(TypeError, match="takes"):
        ss.variants.get("sgd", rho=0.1)


def test_seeds_as_a_count_or_a_list():
    assert seeds("3") == (0, 1, 2)
    assert seeds("0,5") == (0, 5)
    for bad in ("0", "a", "1,1", "-1,2"):
        with pytest.raises(argparse.ArgumentTypeError):
            seeds(bad)


def test_cli_checks_out_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert cli.main(["train", "--out", str(blocker / "x"), "--steps", "10"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert cli.main(["simulate", "--out", str(tmp_path), "--t1", "0.1"]) == 2
    assert "directory" in capsys.readouterr().err


def test_cli_user_errors_are_one_line(capsys):
    assert cli.main(["simulate", "--variant", "m-sam", "--m", "3", "--batch-size", "8"]) == 2
    err = capsys.readouterr().err
    assert "must divide" in err and "Traceback" not in err


def test_every_cli_option_has_help():
    for action in cli.build_parser()._subparsers._group_actions[0].choices["train"]._actions:  # pyright: ignore[reportIndexIssue, reportOptionalMemberAccess, reportOptionalSubscript]
        assert action.help, action.dest


def test_parallel_cli_user_error_is_one_line():
    out = subprocess.run(
        [sys.executable, "-m", "sde_sam.parallel_cli", "--num-paths", "0"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr and "num_paths" in out.stderr


def test_results_are_0644_with_unique_temporary_names(tmp_path):
    path = ss.save_result(tmp_path / "r", {"a": np.ones(2)}, {"seed": 0})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rho=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 3), st.none(), st.text(max_size=2)),
    m=st.one_of(st.integers(-2, 40), st.floats(0, 8), st.none()),
    eta=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-1, 1)),
    steps=st.one_of(st.integers(-2, 3), st.floats(0, 3)),
)
def test_fuzz_factories_and_runner(problem, rho, m, eta, steps):
    """Any input is either run to finite numbers or refused with ValueError/TypeError (never NaN or an XLA error)."""
    try:
        variant = ss.variants.m_sam(rho, micro_batch_size=m)
        runs = ss.run_discrete(
            problem,
            variant,
            ss.WithReplacement(4),
            eta=eta,
            steps=steps,
            num_runs=2,
            key=jr.key(0),
            record=("loss",),
            progress=False,
        )
    except (*WRONG_TYPE, TypeError):
        return
    assert np.all(np.isfinite(runs.values["loss"][~runs.diverged]))


def test_problem_repr_is_short():
    problem = ss.problems.digits_mlp(hidden=8)
    text = repr(problem)
    assert len(text) < 120 and "n=1438" in text and "d=626" in text


@pytest.mark.filterwarnings("ignore:os.fork")  # the child execs at once; preexec_fn undoes an inherited SIG_IGN
def test_ctrl_c_ends_a_long_computation_promptly_and_cleanly():
    """SIGINT during a long compiled simulation: exit status 130, a one-line note, no traceback. The signal is sent
    once the progress bar shows (the bar is fed from inside the compiled scan), not after a fixed sleep; the bound
    on the time to leave is generous (the whole run takes minutes), so a busy machine cannot fail it."""
    import select
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "sde_sam", "simulate", "--variant", "m-sam", "--m", "2", "--t1", "50", "--paths", "256"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = b""
    try:
        deadline = time.monotonic() + 540
        while b"%|" not in seen:  # tqdm's bar: the scan is running
            assert proc.poll() is None, f"ended before its progress bar: {seen.decode(errors='replace')}"
            assert time.monotonic() < deadline, "no progress bar within 9 minutes"
            if select.select([proc.stderr], [], [], 1.0)[0]:  # pyright: ignore[reportArgumentType]
                seen += os.read(proc.stderr.fileno(), 4096)  # pyright: ignore[reportOptionalMemberAccess]
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = (seen + err).decode(errors="replace")
    assert proc.returncode == 130 and time.monotonic() - start < 60, err
    assert "interrupted" in err and "Traceback" not in err


def _children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc; zombies excluded)."""
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:  # the process ended while listed
            continue
        if fields.get("PPid", "").strip() == str(pid) and not fields.get("State", "").startswith("Z"):
            out.append(int(status.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="lists processes from /proc")
@pytest.mark.filterwarnings("ignore:os.fork")
def test_ctrl_c_ends_the_stage_processes_too(tmp_path):
    """``reproduce --workers 2``: SIGINT to the command (not to its stage processes) while a stage process is
    compiling ends the command with status 130 and a one-line note, and ends every stage process (none is left
    running, orphaned). Sent once a program is in the compilation cache, not after a fixed sleep."""
    import signal
    import time

    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sde_sam", "reproduce", "--only", "C5", "--workers", "2", "--no-progress", "--out", out],
        env={k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"},  # the cache under out
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 540
        while not any((out / "jax_cache").glob("*")):  # a stage process has compiled a program
            assert proc.poll() is None, proc.communicate()[1].decode(errors="replace")
            assert time.monotonic() < deadline, "no compiled program within 9 minutes"
            time.sleep(0.2)
        children = _children(proc.pid)
        assert len(children) >= 2, children  # the stage processes (and multiprocessing's resource tracker)
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130 and time.monotonic() - start < 60, err.decode(errors="replace")
        while any(_alive(c) for c in children):
            assert time.monotonic() - start < 60, [c for c in children if _alive(c)]
            time.sleep(0.2)
    finally:
        proc.kill()
        for c in _children(proc.pid):
            os.kill(c, 9)
    text = err.decode(errors="replace")
    assert "interrupted" in text and "Traceback" not in text
