"""Euler–Maruyama simulator (DESIGN §3, §6): numpy/diffrax references, sharding, divergence, bad input."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_sam as ss
from sde_sam._sde._diffusion import standard_normal_weights
from sde_sam._sde._sde_model import step_keys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _linreg(n=8, d=3, seed=0):
    return ss.problems.linear_regression(n=n, d=d, seed=seed)


def test_noiseless_path_is_numpy_euler():
    """SGD drift of linear regression ``A^T(Aw - y)/n``, diffusion 'none', ``dt = eta/2``: explicit Euler in numpy."""
    pr = _linreg()
    a, y, w = (np.asarray(v, np.float64) for v in (pr.data["a"], pr.data["y"], pr.init_params))
    model = ss.sde_model(pr, ss.variants.sgd(), ss.WithReplacement(2), eta=0.1, diffusion="none")
    paths = ss.simulate(model, t1=1.0, num_paths=2, key=jr.key(0), record=ss.observables("loss", every=4), dt=0.05)
    want = [w.copy()]
    for _ in range(20):
        w = w - 0.05 * a.T @ (a @ w - y) / 8
        want.append(w)
    losses = [0.5 * np.mean((a @ v - y) ** 2) for v in want[::4]]
    assert isinstance(paths, ss.Runs)
    np.testing.assert_allclose(paths.times, np.arange(6) * 0.2, rtol=1e-12)
    np.testing.assert_allclose(paths.values["loss"][0], losses, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(paths.final_params[1]), want[-1], rtol=1e-5)


def test_mean_of_sgd_paths_follows_the_drift_recursion():
    """Affine drift: ``E X_j`` obeys the noiseless recursion exactly; the path mean is within 4 stderr of it."""
    pr = _linreg(n=10, d=2, seed=3)
    a, y, w = (np.asarray(v, np.float64) for v in (pr.data["a"], pr.data["y"], pr.init_params))
    model = ss.sde_model(pr, ss.variants.sgd(), ss.WithReplacement(1), eta=0.2)
    rec = ss.observables(w0=lambda p, x: x[0], w1=lambda p, x: x[1], every=10)
    paths = ss.simulate(model, t1=2.0, num_paths=2000, key=jr.key(1), record=rec)
    for _ in range(10):
        w = w - 0.2 * a.T @ (a @ w - y) / 10
    for i in range(2):
        m, se = paths.mean(f"w{i}")[-1], paths.stderr(f"w{i}")[-1]
        assert se > 0 and abs(m - w[i]) < 4 * se, (m, w[i], se)


def test_matches_diffrax_euler_with_same_increments():
    diffrax = pytest.importorskip("diffrax")
    with jax.enable_x64(True):
        pr = _linreg(n=6, d=3, seed=1).with_dtype(jnp.float64)
        sampler = ss.WithoutReplacement(2)
        eta, steps, P = 0.1, 15, 3
        model = ss.sde_model(pr, ss.variants.usam(0.3), sampler, eta=eta, drift="closed_form")
        key = jr.key(7)
        paths = ss.simulate(model, t1=eta * steps, num_paths=P, key=key, record=ss.observables("loss"), save_paths=True)
        c = sampler.factor(2, 6)

        def dense_diffusion(t, x, args):  # d x n matrix sqrt(eta c / n) (g_i - g)^T, materialized
            G = jax.vmap(jax.grad(pr.loss_fn), in_axes=(None, 0))(x, pr.data)
            return jnp.sqrt(eta * c / 6) * (G - G.mean(0)).T

        ts = jnp.arange(steps + 1, dtype=jnp.float64) * eta

        @jax.jit
        def diffrax_path(path_key):
            u = jax.vmap(lambda j: standard_normal_weights(step_keys(path_key, j)[1], 6, jnp.float64))(
                jnp.arange(steps)
            )
            W = jnp.concatenate([jnp.zeros((1, 6)), jnp.cumsum(jnp.sqrt(eta) * u, axis=0)])
            bm = diffrax.LinearInterpolation(ts, W)
            terms = diffrax.MultiTerm(
                diffrax.ODETerm(lambda t, x, args: -model.drift(x)), diffrax.ControlTerm(dense_diffusion, bm)
            )
            return diffrax.diffeqsolve(
                terms,
                diffrax.Euler(),
                0.0,
                eta * steps,
                eta,
                pr.init_params,
                saveat=diffrax.SaveAt(ts=ts),
                max_steps=steps + 1,
            ).ys

        for p, path_key in enumerate(jr.split(key, P)):
            np.testing.assert_allclose(
                np.asarray(paths.paths[p]),  # pyright: ignore[reportOptionalSubscript]
                np.asarray(diffrax_path(path_key)),
                rtol=1e-10,
                atol=1e-12,  # pyright: ignore[reportOptionalSubscript]
            )


_SHARDED = r"""
import json, sys
import jax, jax.numpy as jnp, jax.random as jr, numpy as np
from jax.sharding import Mesh
sys.path.insert(0, {root!r})
import sde_sam as ss
assert len(jax.devices()) == 2, jax.devices()
pr = ss.problems.linear_regression(n=16, d=4, seed=2)
model = ss.sde_model(pr, ss.variants.sam(0.1), ss.WithReplacement(4), eta=0.1)
mesh = Mesh(np.array(jax.devices()), ("paths",))
out = ss.simulate(model, t1=1.0, num_paths=8, key=jr.key(11), record=ss.observables("loss", "param_norm_sq", every=2),
                  mesh=mesh, paths_per_block=4)
print(json.dumps({{k: v.tolist() for k, v in out.values.items()}} | {{"final": np.asarray(out.final_params).tolist()}}))
"""


def test_sharded_paths_are_bit_identical():
    pr = ss.problems.linear_regression(n=16, d=4, seed=2)
    model = ss.sde_model(pr, ss.variants.sam(0.1), ss.WithReplacement(4), eta=0.1)
    ref = ss.simulate(
        model,
        t1=1.0,
        num_paths=8,
        key=jr.key(11),
        record=ss.observables("loss", "param_norm_sq", every=2),
        paths_per_block=4,
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED.format(root=ROOT)], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("loss", "param_norm_sq"):
        np.testing.assert_array_equal(np.asarray(got[name], np.float32), ref.values[name])
    np.testing.assert_array_equal(np.asarray(got["final"], np.float32), np.asarray(ref.final_params))


def test_diverged_paths_are_counted_frozen_and_left_out():
    pr = _linreg(n=8, d=2, seed=4)
    model = ss.sde_model(pr, ss.variants.sgd(), ss.WithReplacement(1), eta=0.5)  # large noise: some paths blow up
    thr = 6.0
    paths = ss.simulate(
        model, t1=5.0, num_paths=64, key=jr.key(2), record=ss.observables("param_norm_sq"), divergence_threshold=thr
    )
    div = paths.diverged
    assert 0 < paths.num_diverged < 64
    v = paths.values["param_norm_sq"]
    assert np.all(np.isfinite(v[~div]))
    for p in np.flatnonzero(div):
        j = paths.diverged_step[p]
        assert np.all(np.isnan(v[p, j:])) and np.all(np.isfinite(v[p, :j]))
        # frozen at the last iterate before crossing the threshold
        assert float(np.sum(np.asarray(paths.final_params[p]) ** 2)) <= thr
    np.testing.assert_allclose(paths.mean("param_norm_sq"), v[~div].mean(0), rtol=1e-6)


def test_one_key_per_path_reproduces_a_path():
    """Path ``p`` depends on ``(key, p)`` only: the first 3 of 5 paths equal a 3-path run."""
    pr = _linreg()
    model = ss.sde_model(pr, ss.variants.usam(0.1), ss.WithReplacement(2), eta=0.1, drift="closed_form")
    rec = ss.observables("loss", every=5)
    five = ss.simulate(model, t1=1.0, num_paths=5, key=jr.key(3), record=rec)
    three = ss.simulate(model, t1=1.0, num_paths=3, key=jr.key(3), record=rec)
    assert five.values["loss"].shape == (5, 3)
    np.testing.assert_allclose(five.values["loss"][:3], three.values["loss"], rtol=1e-6)
    assert five.num_diverged == 0


# -- bad input ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model():
    return ss.sde_model(_linreg(), ss.variants.sgd(), ss.WithReplacement(2), eta=0.1)


def test_dt_must_be_positive(model):
    with pytest.raises(ValueError, match="dt"):
        ss.simulate(model, t1=1.0, key=jr.key(0), dt=0.0)


def test_dt_must_divide_eta(model):
    with pytest.raises(ValueError, match="dt"):
        ss.simulate(model, t1=1.0, key=jr.key(0), dt=0.03)


def test_t1_must_be_nonnegative(model):
    with pytest.raises(ValueError, match="t1"):
        ss.simulate(model, t1=-1.0, key=jr.key(0))


def test_t1_must_be_on_the_grid(model):
    with pytest.raises(ValueError, match="t1"):
        ss.simulate(model, t1=0.25, key=jr.key(0))


def test_unknown_observable(model):
    with pytest.raises(ValueError, match="unknown observable"):
        ss.simulate(model, t1=1.0, key=jr.key(0), record=("loss", "sharpness_of_everything"))


def test_init_params_shape_mismatch(model):
    with pytest.raises(ValueError, match="init_params"):
        ss.simulate(model, t1=1.0, key=jr.key(0), init_params=jnp.zeros(5))


def test_num_paths_must_be_positive(model):
    with pytest.raises(ValueError, match="num_paths"):
        ss.simulate(model, t1=1.0, key=jr.key(0), num_paths=0)


def test_model_type(model):
    with pytest.raises(TypeError, match="model"):
        ss.simulate(ss.variants.sgd(), t1=1.0, key=jr.key(0))  # pyright: ignore[reportArgumentType]


def test_init_params_start_every_path(model):
    pr = model.problem
    a, y = np.asarray(pr.data["a"], np.float64), np.asarray(pr.data["y"], np.float64)
    x0 = np.array([0.5, -1.0, 2.0])
    paths = ss.simulate(
        model, t1=0.2, num_paths=3, key=jr.key(0), record=("loss",), init_params=jnp.asarray(x0, jnp.float32)
    )
    np.testing.assert_allclose(paths.values["loss"][:, 0], 0.5 * np.mean((a @ x0 - y) ** 2), rtol=1e-5)


def test_paths_per_block_must_divide(model):
    with pytest.raises(ValueError, match="paths_per_block"):
        ss.simulate(model, t1=0.2, num_paths=4, key=jr.key(0), paths_per_block=3)
