"""Curvature estimators (DESIGN §4) against dense Hessians and dense covariances."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import dense_example_jacobian, dense_hessian, user_problem
from jax.flatten_util import ravel_pytree

import sde_sam as ss

pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (tests/conftest.py)


def _teacher():
    return ss.problems.teacher_student(n=64).with_dtype(jnp.float64)


@pytest.mark.parametrize("chunk_size", [None, 5])
def test_hvp_matches_dense_hessian(chunk_size):
    pr = user_problem(n=13, d=3).with_dtype(jnp.float64)
    H = dense_hessian(pr, pr.init_params)
    flat, unravel = ravel_pytree(pr.init_params)
    v = np.random.default_rng(0).standard_normal(flat.size)
    got = ravel_pytree(ss.curvature.hvp(pr, pr.init_params, unravel(jnp.asarray(v)), chunk_size=chunk_size))[0]
    np.testing.assert_allclose(got, H @ v, atol=1e-10)


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_trace_hessian_unbiased_with_calibrated_stderr():
    """30 independent 8-probe estimates: their mean is within 4 standard errors of the dense tr H, each single
    estimate within 4 of its own reported stderr, and their spread matches the reported stderr."""
    pr = _teacher()
    want = np.trace(dense_hessian(pr, pr.init_params))
    ests = [ss.curvature.trace_hessian(pr, pr.init_params, k, 8, chunk_size=16) for k in jr.split(jr.key(1), 30)]
    vals, errs = np.array([float(e.value) for e in ests]), np.array([float(e.stderr) for e in ests])
    assert abs(vals.mean() - want) < 4 * vals.std(ddof=1) / np.sqrt(vals.size)
    assert np.all(np.abs(vals - want) < 4 * errs)
    assert 0.6 < vals.std(ddof=1) / np.sqrt(np.mean(errs**2)) < 1.6


def test_hutchinson_is_exact_on_a_diagonal_operator():
    """Rademacher probes give z^T D z = tr D for every probe: value exact, stderr 0."""
    diag = jnp.asarray(np.random.default_rng(2).standard_normal(20))
    est = ss.curvature.hutchinson(lambda v: diag * v, diag, jr.key(0), 5)
    assert abs(float(est.value) - float(diag.sum())) < 1e-12 and float(est.stderr) < 1e-12
    # and for a dense symmetric operator, the mean of many probes is unbiased within its stderr
    a = np.random.default_rng(3).standard_normal((20, 20))
    a = jnp.asarray(a + a.T)
    est = ss.curvature.hutchinson(lambda v: a @ v, diag, jr.key(1), 4000, batch_size=4000)
    assert abs(float(est.value) - float(jnp.trace(a))) < 4 * float(est.stderr)


def test_top_eigenvalues_match_eigh():
    pr = _teacher()
    vals, vecs = np.linalg.eigh(dense_hessian(pr, pr.init_params))
    eigs = ss.curvature.top_eigenvalues(pr, pr.init_params, 3, jr.key(0), num_matvecs=pr.dim)
    np.testing.assert_allclose(eigs.values, vals[::-1][:3], rtol=1e-8)
    np.testing.assert_allclose(np.abs(np.sum(np.asarray(eigs.vectors) * vecs[:, ::-1][:, :3].T, axis=1)), 1, atol=1e-7)
    few = ss.curvature.top_eigenvalues(pr, pr.init_params, 1, jr.key(1), num_matvecs=20)
    assert abs(float(few.values[0]) - vals[-1]) < 1e-6 * abs(vals[-1])


def test_spectral_density_moments_and_smoothed_density():
    pr = _teacher()
    lam = np.linalg.eigvalsh(dense_hessian(pr, pr.init_params))
    sd = ss.curvature.spectral_density(pr, pr.init_params, jr.key(0), num_probes=60, num_matvecs=12, sigma=0.05)
    nodes, weights = np.asarray(sd.nodes), np.asarray(sd.weights)
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-10)
    for p in (1, 2, 3):  # m = 12 point Gauss quadrature is exact for degree <= 23 polynomials, per probe
        per_probe = np.sum(weights * nodes**p, axis=1)
        err = per_probe.std(ddof=1) / np.sqrt(per_probe.size)
        assert abs(per_probe.mean() - np.mean(lam**p)) < 4 * err, p
    dense = np.mean(np.exp(-0.5 * ((np.asarray(sd.grid)[:, None] - lam) / 0.05) ** 2), axis=1) / (
        0.05 * np.sqrt(2 * np.pi)
    )
    dx = float(sd.grid[1] - sd.grid[0])
    assert abs(np.sum(sd.density) * dx - 1) < 1e-3
    assert np.sum(np.abs(sd.density - dense)) * dx < 0.25  # L1 distance between the densities (max 2)


def _dense_alignment(pr, k):
    G = dense_example_jacobian(pr, pr.init_params)
    g = G.mean(0)
    S = (G - g).T @ (G - g) / G.shape[0]
    F = G.T @ G / G.shape[0]
    H = dense_hessian(pr, pr.init_params)
    cos = lambda a, b: np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    us = np.linalg.eigh(S)[1][:, ::-1][:, :k]
    uh = np.linalg.eigh(H)[1][:, ::-1][:, :k]
    return {
        "cosine": cos(S, H),
        "trace_ratio": np.trace(S) / np.trace(H),
        "overlap": np.sum((us.T @ uh) ** 2) / k,
        "trace_sigma": np.trace(S),
        "trace_hessian": np.trace(H),
        "trace_fisher": np.trace(F),
        "fisher_cosine": cos(S, F),
        "fisher_hessian_cosine": cos(F, H),
    }


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_alignment_exact_and_stochastic():
    pr = _teacher()
    want = _dense_alignment(pr, 3)
    exact = ss.curvature.alignment(pr, pr.init_params, jr.key(0), k=3, method="exact")
    for name, value in want.items():
        got = getattr(exact, name)
        got = got.value if isinstance(got, ss.Estimate) else got
        assert abs(float(got) - value) < 1e-8, name
    sto = ss.curvature.alignment(
        pr, pr.init_params, jr.key(1), k=3, method="stochastic", num_probes=200, num_matvecs=pr.dim
    )
    assert abs(float(sto.overlap) - want["overlap"]) < 1e-6
    for name in ("cosine", "trace_ratio", "trace_hessian", "fisher_cosine", "fisher_hessian_cosine"):
        est = getattr(sto, name)
        assert abs(float(est.value) - want[name]) < 4 * float(est.stderr) + 1e-12, (name, est, want[name])
    for name in ("trace_sigma", "trace_fisher"):
        assert abs(float(getattr(sto, name).value) - want[name]) < 1e-10


def test_num_probes_must_be_positive():
    pr = _teacher()
    with pytest.raises(ValueError, match="num_probes"):
        ss.curvature.trace_hessian(pr, pr.init_params, jr.key(0), 0)


def test_k_larger_than_d_is_rejected():
    pr = user_problem(n=5, d=3)
    with pytest.raises(ValueError, match=r"`k`.*\[1, d=4\]"):
        ss.curvature.top_eigenvalues(pr, pr.init_params, 5, jr.key(0))


def test_chunk_size_must_be_positive():
    pr = user_problem(n=5, d=3)
    with pytest.raises(ValueError, match="chunk_size"):
        ss.curvature.hvp(pr, pr.init_params, pr.init_params, chunk_size=-1)
