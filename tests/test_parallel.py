"""sde_sam.parallel: sharded paths/runs on 2 devices and on 2 processes equal the single-device run; streaming
moments equal numpy moments of all paths; bad input."""

import json
import os
import subprocess
import sys

import jax.random as jr
import numpy as np
import pytest
from helpers import WRONG_TYPE

import sde_sam as ss
from sde_sam._io import key_config
from sde_sam._parallel import _parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVELS = (0.1, 0.5, 0.9)


REC = ss.observables("loss", "param_norm_sq", every=2)
SIM = {"t1": 0.5, "num_paths": 20, "key": jr.key(4), "record": REC}  # the configuration shared by the tests below


def _model():
    pr = ss.problems.linear_regression(n=16, d=3, seed=0)
    return ss.sde_model(pr, ss.variants.usam(0.05), ss.WithReplacement(4), eta=0.05, drift="closed_form")


MODEL = _model()


@pytest.fixture(scope="module")
def ref():
    """All 20 paths on one device, 2 paths per block."""
    return ss.simulate(MODEL, paths_per_block=2, **SIM)


def _numpy_moments(values: np.ndarray):
    """Independent float64 moments of ``(P, T)`` values: mean, var (ddof 1), stderr."""
    v = values.astype(np.float64)
    mean = v.mean(0)
    var = ((v - mean) ** 2).sum(0) / (v.shape[0] - 1)
    return mean, var, np.sqrt(var / v.shape[0])


def _env(**extra):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SDE_SAM_", "JAX_COORDINATOR", "JAX_NUM_PROC", "JAX_PROCESS_ID", "XLA_FLAGS"))
    }
    return env | {"JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT + os.pathsep + env.get("PYTHONPATH", "")} | extra


# -- in-process (one device) ---------------------------------------------------------------------------


def test_chunked_moments_equal_numpy_moments_of_all_paths(ref):
    # chunks of 12: the last chunk (8 paths) is padded and masked; quantiles from paths 0, 4, 8, 12, 16
    m = ss.parallel.simulate_moments(
        MODEL, chunk_paths=12, paths_per_block=2, quantiles=LEVELS, quantile_paths=5, **SIM
    )
    assert m.count == 20 and m.num_diverged == 0
    assert m.quantile_stride == 4 and m.quantile_count == 5
    np.testing.assert_allclose(m.times, ref.times)
    for name in REC.names:
        mean, var, se = _numpy_moments(ref.values[name])
        np.testing.assert_allclose(m.mean[name], mean, rtol=2e-6)
        np.testing.assert_allclose(m.var[name][1:], var[1:], rtol=5e-5)
        np.testing.assert_allclose(m.stderr[name][1:], se[1:], rtol=5e-5)
        # same per-path values (same keys, same block size) -> identical quantiles of the same subset
        sub = ref.values[name][::4].astype(np.float64)
        np.testing.assert_array_equal(m.quantiles[name], np.quantile(sub, LEVELS, axis=0))


def test_diverged_paths_are_counted_not_averaged():
    pr = ss.problems.linear_regression(n=8, d=2, seed=4)
    model = ss.sde_model(pr, ss.variants.sgd(), ss.WithReplacement(1), eta=0.5)
    rec = ss.observables("param_norm_sq")
    kw = {"t1": 3.0, "num_paths": 32, "key": jr.key(2), "record": rec, "divergence_threshold": 6.0}
    ref = ss.simulate(model, paths_per_block=8, **kw)
    m = ss.parallel.simulate_moments(model, chunk_paths=16, paths_per_block=8, quantiles=(0.5,), **kw)
    assert 0 < ref.num_diverged < 32
    assert m.num_diverged == ref.num_diverged and m.count == 32 - ref.num_diverged
    kept = ref.values["param_norm_sq"][~ref.diverged]
    mean, var, _ = _numpy_moments(kept)
    np.testing.assert_allclose(m.mean["param_norm_sq"], mean, rtol=2e-6)
    np.testing.assert_allclose(m.var["param_norm_sq"][1:], var[1:], rtol=5e-5)
    np.testing.assert_array_equal(m.quantiles["param_norm_sq"][0], np.median(kept.astype(np.float64), axis=0))


def test_chan_merge_equals_numpy_on_random_batches():
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(1000, 4))
    n, mean, m2 = 0, np.zeros(4), np.zeros(4)
    for lo, hi in [(0, 1), (1, 300), (300, 301), (301, 1000)]:
        b = x[lo:hi]
        bm = b.mean(0)
        n, mean, m2 = _parallel._merge(n, mean, m2, hi - lo, bm, ((b - bm) ** 2).sum(0))
    assert n == 1000
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m2 / 999, x.var(0, ddof=1), rtol=1e-12)


def test_run_discrete_blocks_and_padding_equal_plain_run():
    pr = ss.problems.linear_regression(n=16, d=3, seed=1)
    rec = ss.observables("loss", every=2)
    kw = {"eta": 0.1, "steps": 6, "num_runs": 5, "key": jr.key(3), "record": rec}
    plain = ss.run_discrete(pr, ss.variants.usam(0.1), ss.WithReplacement(4), **kw)
    blocked = ss.parallel.run_discrete(pr, ss.variants.usam(0.1), ss.WithReplacement(4), runs_per_block=2, **kw)
    assert blocked.values["loss"].shape == (5, 4)  # 5 runs padded to 6 and cut back
    np.testing.assert_allclose(blocked.values["loss"], plain.values["loss"], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(blocked.final_params), np.asarray(plain.final_params), rtol=1e-6)


def test_save_writes_json_and_npz_on_process_zero(tmp_path):
    m = ss.parallel.simulate_moments(
        MODEL, chunk_paths=12, paths_per_block=2, quantiles=LEVELS, quantile_paths=5, **SIM
    )
    out = ss.parallel.save(tmp_path / "sub" / "res", m, meta={"note": "x"})
    assert out is not None and out.exists()
    meta = json.loads(out.read_text())
    assert meta["note"] == "x" and meta["count"] == 20
    with np.load(out.with_suffix(".npz")) as f:
        np.testing.assert_array_equal(f["mean.loss"], m.mean["loss"])
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name.endswith(".tmp")]


def test_initialize_without_settings_is_single_process(monkeypatch):
    for names in _parallel.ENV.values():
        for var in names:
            monkeypatch.delenv(var, raising=False)
    assert ss.parallel.initialize() is False


# -- bad input -----------------------------------------------------------------------------------------


def test_initialize_missing_process_id(monkeypatch):
    for names in _parallel.ENV.values():
        for var in names:
            monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SDE_SAM_COORDINATOR", "127.0.0.1:1")
    monkeypatch.setenv("SDE_SAM_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="process_id"):
        ss.parallel.initialize()


def test_initialize_process_id_out_of_range():
    with pytest.raises(ValueError, match="process_id"):
        ss.parallel.initialize("127.0.0.1:1", 2, 2)


def test_initialize_bad_coordinator():
    with pytest.raises(ValueError, match="coordinator"):
        ss.parallel.initialize("localhost", 2, 0)


def test_initialize_bad_num_processes():
    with pytest.raises(ValueError, match="num_processes"):
        ss.parallel.initialize("127.0.0.1:1", 0, 0)


def test_make_mesh_no_devices():
    with pytest.raises(ValueError, match="devices"):
        ss.parallel.make_mesh([])


def test_run_discrete_bad_mesh():
    pr = ss.problems.linear_regression(n=8, d=2, seed=0)
    with pytest.raises(ValueError, match="mesh"):
        ss.run_discrete(
            pr,
            ss.variants.sgd(),
            ss.WithReplacement(2),
            eta=0.1,
            steps=1,
            key=jr.key(0),
            record=ss.observables("loss"),
            mesh="cpu",
        )


def test_run_discrete_bad_runs_per_block():
    pr = ss.problems.linear_regression(n=8, d=2, seed=0)
    with pytest.raises(ValueError, match="runs_per_block"):
        ss.run_discrete(
            pr,
            ss.variants.sgd(),
            ss.WithReplacement(2),
            eta=0.1,
            steps=1,
            key=jr.key(0),
            record=ss.observables("loss"),
            runs_per_block=0,
        )


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"chunk_paths": 0}, "chunk_paths"),
        ({"num_paths": 0}, "num_paths"),
        ({"quantiles": (1.5,)}, "quantiles"),
        ({"quantile_paths": 0}, "quantile_paths"),
        ({"chunk_paths": 4, "paths_per_block": 3}, "chunk_paths"),
        ({"t1": 0.07}, "t1"),
        ({"mesh": "cpu"}, "mesh"),
    ],
)
def test_simulate_moments_bad_input(kw, match):
    args = {"t1": 0.1, "num_paths": 8, "key": jr.key(0), "record": ("loss",)} | kw
    with pytest.raises(WRONG_TYPE if match == "mesh" else ValueError, match=match):
        ss.parallel.simulate_moments(MODEL, **args)


def test_simulate_moments_bad_model():
    with pytest.raises(TypeError, match="model"):
        ss.parallel.simulate_moments("model", t1=0.1, num_paths=4, key=jr.key(0))  # pyright: ignore[reportArgumentType]


# -- two devices in one process, two processes ---------------------------------------------------------

_TWO_DEVICES = r"""
import json, sys
import jax, jax.random as jr, numpy as np
import sde_sam as ss
assert jax.device_count() == 2, jax.devices()
mesh = ss.parallel.make_mesh()
pr = ss.problems.linear_regression(n=16, d=3, seed=0)
model = ss.sde_model(pr, ss.variants.usam(0.05), ss.WithReplacement(4), eta=0.05, drift="closed_form")
rec = ss.observables("loss", "param_norm_sq", every=2)
m = ss.parallel.simulate_moments(model, t1=0.5, num_paths=20, key=jr.key(4), record=rec, chunk_paths=12,
                                 paths_per_block=2, quantiles={levels!r}, mesh=mesh)
runs = ss.run_discrete(pr, ss.variants.usam(0.1), ss.WithReplacement(4), eta=0.1, steps=6, num_runs=5, key=jr.key(3),
                       record=ss.observables("loss", every=2), runs_per_block=1, mesh=mesh)
print(json.dumps(dict(count=m.count, devices=m.config["devices"], mean={{k: v.tolist() for k, v in m.mean.items()}},
                      var={{k: v.tolist() for k, v in m.var.items()}},
                      quantiles={{k: v.tolist() for k, v in m.quantiles.items()}},
                      runs=runs.values["loss"].tolist(), run_devices=runs.config["devices"])))
"""


def test_two_devices_equal_one_device(ref):
    proc = subprocess.run(
        [sys.executable, "-c", _TWO_DEVICES.format(levels=LEVELS)],
        env=_env(XLA_FLAGS="--xla_force_host_platform_device_count=2"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["devices"] == 2 and got["run_devices"] == 2 and got["count"] == 20
    for name in REC.names:
        mean, var, _ = _numpy_moments(ref.values[name])
        np.testing.assert_allclose(got["mean"][name], mean, rtol=2e-6)
        np.testing.assert_allclose(got["var"][name][1:], var[1:], rtol=5e-5)
        np.testing.assert_array_equal(
            got["quantiles"][name], np.quantile(ref.values[name].astype(np.float64), LEVELS, axis=0)
        )
    pr = ss.problems.linear_regression(n=16, d=3, seed=0)
    runs = ss.run_discrete(
        pr,
        ss.variants.usam(0.1),
        ss.WithReplacement(4),
        eta=0.1,
        steps=6,
        num_runs=5,
        key=jr.key(3),
        record=ss.observables("loss", every=2),
        runs_per_block=1,
    )
    np.testing.assert_array_equal(np.asarray(got["runs"], np.float32), runs.values["loss"])


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_two_processes_equal_one_process(tmp_path, ref):
    out = tmp_path / "moments"
    args = [
        "--problem-kw",
        '{"n": 16, "d": 3, "seed": 0}',
        "--variant",
        "usam",
        "--variant-kw",
        '{"rho": 0.05}',
        "--drift",
        "closed_form",
        "--eta",
        "0.05",
        "--seed",
        "4",
        "--t1",
        "0.5",
        "--every",
        "2",
        "--num-paths",
        "20",
        "--chunk-paths",
        "12",
        "--paths-per-block",
        "2",
        "--quantiles",
        ",".join(map(str, LEVELS)),
        "--per-path",
        "--out",
        str(out),
    ]
    procs = ss.parallel.launch_local(
        [sys.executable, "-m", "sde_sam.parallel_cli", *args], 2, env=_env(), cwd=ROOT, timeout=120
    )
    for p in procs:
        assert p.returncode == 0, p.stderr[-3000:]
    outs = [(p.stdout, p.stderr) for p in procs]
    summary = json.loads(outs[0][0].strip().splitlines()[-1])
    assert summary["processes"] == 2 and summary["devices"] == 2 and summary["count"] == 20
    assert summary["seed"] == 4 and summary["key"] == key_config(jr.key(4))  # the key rebuilds the run
    assert json.loads((tmp_path / "moments.json").read_text())["config"]["key"] == summary["key"]
    assert not [line for line in outs[1][0].splitlines() if line.startswith("{")]  # only process 0 reports
    with np.load(str(out) + ".npz") as f:
        for name in REC.names:
            np.testing.assert_array_equal(f[f"values.{name}"], ref.values[name])  # path for path
            mean, var, _ = _numpy_moments(ref.values[name])
            np.testing.assert_allclose(f[f"mean.{name}"], mean, rtol=2e-6)
            np.testing.assert_allclose(f[f"var.{name}"][1:], var[1:], rtol=5e-5)
            np.testing.assert_array_equal(
                f[f"quantiles.{name}"], np.quantile(ref.values[name].astype(np.float64), LEVELS, axis=0)
            )


def test_launch_local_passes_coordinator_flags_and_kills_on_timeout():
    show = [sys.executable, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))"]
    procs = ss.parallel.launch_local(show, 3, timeout=60)
    argvs = [json.loads(p.stdout) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert [a[a.index("--process-id") + 1] for a in argvs] == ["0", "1", "2"]
    assert {a[a.index("--coordinator") + 1] for a in argvs} == {argvs[0][1]}  # one coordinator address for all
    assert all(a[a.index("--num-processes") + 1] == "3" for a in argvs)
    with pytest.raises(subprocess.TimeoutExpired):
        ss.parallel.launch_local([sys.executable, "-c", "import time; time.sleep(60)"], 2, timeout=1)
    with pytest.raises(ValueError, match="num_processes"):
        ss.parallel.launch_local(show, 0)
