"""Noise estimators (DESIGN §4) against dense computations, exact enumerations and known laws."""

import itertools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import dense_example_jacobian, location_problem, numpy_example_grads, user_problem
from jax.flatten_util import ravel_pytree
from scipy import stats

import sde_sam as ss

pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (tests/conftest.py)


def _problems():
    return {
        "user": user_problem(n=13, d=3).with_dtype(jnp.float64),
        "teacher_student": ss.problems.teacher_student(n=64).with_dtype(jnp.float64),
        "linreg": ss.problems.linear_regression(n=50, d=6).with_dtype(jnp.float64),
    }


def _dense_sigma(problem, params):
    G = dense_example_jacobian(problem, params)
    Gc = G - G.mean(axis=0)
    return Gc.T @ Gc / G.shape[0], G


# -- exact quantities ---------------------------------------------------------------------------------


def test_per_example_grads_match_finite_differences():
    pr = user_problem(n=7, d=3).with_dtype(jnp.float64)
    want = numpy_example_grads(pr, pr.init_params, range(7))
    got = ss.noise.per_example_grads(pr, pr.init_params, chunk_size=3, flat=True)
    np.testing.assert_allclose(got, want, atol=1e-7)


@pytest.mark.parametrize(
    "name,chunk_size", [("user", None), ("user", 1), ("teacher_student", None), ("teacher_student", 5), ("linreg", 7)]
)
def test_trace_sigma_exact(name, chunk_size):
    pr = _problems()[name]
    sigma, G = _dense_sigma(pr, pr.init_params)
    want = np.trace(sigma)
    # the DESIGN formula mean_i ||g_i||^2 - ||g||^2, evaluated densely, agrees too
    assert abs(np.mean(np.sum(G**2, 1)) - np.sum(G.mean(0) ** 2) - want) < 1e-10
    got = float(ss.noise.trace_sigma(pr, pr.init_params, chunk_size=chunk_size))
    assert abs(got - want) <= 1e-8 * max(1.0, want)


def test_trace_sigma_on_a_batch_and_float32_stability():
    pr = _problems()["teacher_student"]
    batch = pr.take(jnp.arange(10, 30))
    sub = ss.Problem(pr.loss_fn, batch, pr.init_params)
    want = np.trace(_dense_sigma(sub, pr.init_params)[0])
    assert abs(float(ss.noise.trace_sigma(pr, pr.init_params, batch=batch, chunk_size=6)) - want) < 1e-10
    # float32 with a large common gradient: the centred merge keeps relative accuracy
    z = np.random.default_rng(0).standard_normal((200, 5)) * 1e-2
    loc = location_problem(z, x0=np.full(5, 100.0))
    want = np.trace(np.cov(z.T, bias=True))
    got32 = float(ss.noise.trace_sigma(loc.with_dtype(jnp.float32), loc.init_params.astype(jnp.float32), chunk_size=16))
    assert abs(got32 - want) / want < 1e-3


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_sigma_matvec_and_matrix_match_dense(chunk_size):
    pr = _problems()["teacher_student"]
    x = pr.init_params
    sigma, _ = _dense_sigma(pr, x)
    flat, unravel = ravel_pytree(x)
    v = np.random.default_rng(1).standard_normal(flat.size)
    got = ravel_pytree(ss.noise.sigma_matvec(pr, x, unravel(jnp.asarray(v)), chunk_size=chunk_size))[0]
    np.testing.assert_allclose(got, sigma @ v, atol=1e-10)
    np.testing.assert_allclose(ss.noise.sigma_matrix(pr, x, chunk_size=chunk_size), sigma, atol=1e-12)


@pytest.mark.parametrize("method", ["randomized", "lanczos"])
def test_sigma_top_eigs_match_eigh(method):
    pr = _problems()["teacher_student"]
    sigma, _ = _dense_sigma(pr, pr.init_params)
    vals, vecs = np.linalg.eigh(sigma)
    vals, vecs = vals[::-1][:3], vecs[:, ::-1][:, :3]
    eigs = ss.noise.sigma_top_eigs(pr, pr.init_params, 3, jr.key(0), method=method, chunk_size=16)
    np.testing.assert_allclose(eigs.values, vals, rtol=1e-6)
    np.testing.assert_allclose(np.abs(np.sum(np.asarray(eigs.vectors) * vecs.T, axis=1)), 1.0, atol=1e-6)


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_grad_trace_sigma_matches_autodiff_of_dense_trace(chunk_size):
    pr = _problems()["teacher_student"]
    flat, unravel = ravel_pytree(pr.init_params)

    def dense_trace(f):  # independent: dense Jacobian of the example losses, then the covariance trace
        G = jax.jacrev(lambda u: pr.example_losses(unravel(u), pr.data))(f)
        return jnp.sum(jnp.square(G - G.mean(0))) / G.shape[0]

    want = jax.grad(dense_trace)(flat)
    got = ravel_pytree(ss.noise.grad_trace_sigma(pr, pr.init_params, chunk_size=chunk_size))[0]
    np.testing.assert_allclose(got, want, atol=1e-9)


@pytest.mark.parametrize("sampler", [ss.WithReplacement(4), ss.WithoutReplacement(4)])
def test_variance_sharpness(sampler):
    pr = _problems()["linreg"]
    n = pr.num_examples
    c = 1 / 4 if isinstance(sampler, ss.WithReplacement) else (n - 4) / (4 * (n - 1))
    want = 0.5 * 0.1 * c * np.trace(_dense_sigma(pr, pr.init_params)[0])
    assert abs(float(ss.noise.variance_sharpness(pr, pr.init_params, 0.1, sampler)) - want) < 1e-10


# -- Monte Carlo estimators -----------------------------------------------------------------------------


@pytest.mark.parametrize("use_full_grad", [True, False])
@pytest.mark.parametrize("replace", [True, False])
def test_trace_sigma_minibatch_unbiased(replace, use_full_grad):
    """m = 10 of n = 20: c(m) is 0.1 with replacement and 0.0526 without, so a wrong factor fails by ~2x.
    One call with K = 2000 batches: within 4 stderr of the exact tr Sigma; and the spread of 30 independent
    such estimates matches their reported stderr (ratio in [0.7, 1.4])."""
    pr = ss.problems.linear_regression(n=20, d=4).with_dtype(jnp.float64)
    sampler = ss.WithReplacement(10) if replace else ss.WithoutReplacement(10)
    want = np.trace(_dense_sigma(pr, pr.init_params)[0])
    est = ss.noise.trace_sigma_minibatch(pr, pr.init_params, sampler, jr.key(3), 2000, use_full_grad=use_full_grad)
    assert abs(float(est.value) - want) < 4 * float(est.stderr), (est, want)
    small = [
        ss.noise.trace_sigma_minibatch(pr, pr.init_params, sampler, k, 2000, use_full_grad=use_full_grad)
        for k in jr.split(jr.key(4), 30)
    ]
    spread = np.std([float(e.value) for e in small], ddof=1)
    reported = np.sqrt(np.mean([float(e.stderr) ** 2 for e in small]))
    assert 0.7 < spread / reported < 1.4, (spread, reported)


def _exact_batch_norm_expectation(pr, b, replace):
    """``E||g_gamma||`` and ``E[H_gamma g_gamma / ||g_gamma||]`` by enumerating every batch, in numpy from the dense
    per-example gradients and Hessians."""
    n = pr.num_examples
    flat, unravel = ravel_pytree(pr.init_params)
    G = dense_example_jacobian(pr, pr.init_params)
    H = np.asarray(jax.vmap(lambda ex: jax.hessian(lambda f: pr.loss_fn(unravel(f), ex))(flat))(pr.data))
    batches = itertools.product(range(n), repeat=b) if replace else itertools.combinations(range(n), b)
    vals, grads = [], []
    for idx in map(list, batches):
        gb, hb = G[idx].mean(0), H[idx].mean(0)
        vals.append(np.linalg.norm(gb))
        grads.append(hb @ gb / np.linalg.norm(gb))
    return np.mean(vals), np.mean(grads, axis=0)


@pytest.mark.parametrize("replace", [True, False])
def test_expected_batch_grad_norm_against_enumeration(replace):
    pr = user_problem(n=6, d=3).with_dtype(jnp.float64)
    sampler = ss.WithReplacement(2) if replace else ss.WithoutReplacement(2)
    want_val, want = _exact_batch_norm_expectation(pr, 2, replace)
    out = ss.noise.expected_batch_grad_norm(pr, pr.init_params, sampler, jr.key(5), 3000, chunk_size=1000)
    assert abs(float(out.value.value) - want_val) < 4 * float(out.value.stderr)
    got, err = (ravel_pytree(t)[0] for t in (out.grad.value, out.grad.stderr))
    assert np.all(np.abs(got - want) < 4 * err), (got, want, err)


# -- shape of the noise ------------------------------------------------------------------------------------


def _symmetric_pareto(rng, alpha, shape):
    return rng.choice([-1.0, 1.0], shape) * rng.uniform(size=shape) ** (-1.0 / alpha)


def test_tail_index_from_samples_known_laws():
    rng = np.random.default_rng(0)
    stable = stats.levy_stable.rvs(1.5, 0.0, size=(2048, 4), random_state=rng)
    est = ss.noise.tail_index_from_samples(stable, jr.key(0))  # pyright: ignore[reportArgumentType]
    assert abs(float(est.value) - 1.5) < 4 * float(est.stderr), est
    gauss = ss.noise.tail_index_from_samples(rng.standard_normal((2048, 4)), jr.key(1))
    assert abs(float(gauss.value) - 2.0) < 4 * float(gauss.stderr), gauss
    assert float(gauss.value) - float(est.value) > 4 * max(float(gauss.stderr), float(est.stderr))
    hill = ss.noise.tail_index_from_samples(_symmetric_pareto(rng, 1.2, (2048, 4)), jr.key(2), method="hill")
    assert abs(float(hill.value) - 1.2) < 4 * float(hill.stderr), hill


def test_tail_index_and_gaussianity_of_problem_noise():
    """Location problem: with batch size 1 the noise is (minus) a centred draw of the centres z_i, whose
    projections are alpha-stable (alpha = 1.5) or Gaussian by construction."""
    rng = np.random.default_rng(1)
    heavy = location_problem(stats.levy_stable.rvs(1.5, 0.0, size=(2000, 6), random_state=rng))
    light = location_problem(rng.standard_normal((2000, 6)))
    sampler = ss.WithReplacement(1)
    est = ss.noise.tail_index(heavy, heavy.init_params, sampler, jr.key(0), 1024, 16, chunk_size=1024)
    assert abs(float(est.value) - 1.5) < 4 * float(est.stderr), est
    est = ss.noise.tail_index(light, light.init_params, sampler, jr.key(0), 1024, 16, chunk_size=1024)
    assert abs(float(est.value) - 2.0) < 4 * float(est.stderr), est

    g_light = ss.noise.gaussianity(light, light.init_params, sampler, jr.key(1), 1024, 16, chunk_size=1024)
    assert g_light.rejection_rate.value <= 0.05 + 4 * g_light.rejection_rate.stderr
    assert abs(g_light.excess_kurtosis.value) < 4 * g_light.excess_kurtosis.stderr
    g_heavy = ss.noise.gaussianity(heavy, heavy.init_params, sampler, jr.key(1), 1024, 16, chunk_size=1024)
    assert g_heavy.rejection_rate.value == 1.0
    assert g_heavy.excess_kurtosis.value > 3.0  # infinite for a stable law; the bootstrap stderr is meaningless


# -- bad input ------------------------------------------------------------------------------------------------


def test_chunk_size_must_be_positive():
    pr = _problems()["linreg"]
    with pytest.raises(ValueError, match="chunk_size"):
        ss.noise.trace_sigma(pr, pr.init_params, chunk_size=0)


def test_k_larger_than_d_is_rejected():
    pr = _problems()["linreg"]
    with pytest.raises(ValueError, match=r"`k`.*\[1, d=6\]"):
        ss.noise.sigma_top_eigs(pr, pr.init_params, 7, jr.key(0))


def test_batch_larger_than_n_without_replacement_is_rejected():
    pr = _problems()["linreg"]
    with pytest.raises(ValueError, match="batch_size"):
        ss.noise.trace_sigma_minibatch(pr, pr.init_params, ss.WithoutReplacement(51), jr.key(0), 10)


def test_full_batch_without_replacement_has_no_noise():
    pr = _problems()["linreg"]
    with pytest.raises(ValueError, match="no noise"):
        ss.noise.trace_sigma_minibatch(pr, pr.init_params, ss.WithoutReplacement(50), jr.key(0), 10)


def test_sampler_type_is_checked():
    pr = _problems()["linreg"]
    with pytest.raises(TypeError, match="sampler"):
        ss.noise.expected_batch_grad_norm(pr, pr.init_params, 4, jr.key(0), 10)
