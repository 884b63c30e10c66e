"""Curvature estimators: Hessian-vector products, ``tr H``, top eigenvalues, spectral density, and the
alignment of ``Sigma`` with ``H`` and with the empirical Fisher (DESIGN §4).

Lanczos and the Rademacher probes come from matfree (``decomp.tridiag_sym`` with full reorthogonalisation,
``eig.eigh_partial``, ``stochtrace.sampler_signs`` and ``stochtrace.monte_carlo_trace``); the probes are mapped
with ``lax.map`` so memory stays at one Hessian-vector product, and standard errors use ``ddof=1``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._checks import Literal, check_integer, choose
from .._problems._problem import Problem
from ._estimate import (
    Eigs,
    Estimate,
    check_chunk_size,
    check_k,
    checks_params,
    jackknife,
    mean_and_stderr,
    num_examples,
)
from ._hessian import hessian_matvec as _hvp
from ._noise import _data, _moments, _operator, _sigma_matrix, _sigma_matvec, check_num_matvecs, lanczos_operator


@checks_params
def hvp(
    problem: Problem, params: PyTree, v: PyTree, batch: PyTree | None = None, chunk_size: int | None = None
) -> PyTree:
    """``H v`` (``H = hess f`` over ``batch``, default all data) by forward-over-reverse, chunk by chunk (DESIGN §4)."""
    check_chunk_size(chunk_size)
    problem.check_params(v, "v")
    return _hvp(problem, params, v, _data(problem, batch), chunk_size)


def hutchinson(
    matvec: Callable[[PyTree], PyTree], like: PyTree, key: PRNGKeyArray, num_probes: int, batch_size: int | None = None
) -> Estimate:
    """Hutchinson's ``tr A = E[z^T A z]`` with Rademacher probes ``z`` (matfree's ``sampler_signs`` and
    ``monte_carlo_trace``); ``A`` given by ``matvec`` on pytrees shaped like ``like``. Stderr ``std/sqrt(P)``.
    ``batch_size``: probes evaluated at once (default one at a time)."""
    from matfree import stochtrace

    num_probes = check_integer("num_probes", num_probes)
    if num_probes < 2:
        raise ValueError("`num_probes` must be >= 2 for a standard error")
    probes = stochtrace.sampler_signs(like, num=num_probes)(key)
    integrand = stochtrace.monte_carlo_trace()
    vals = jax.lax.map(lambda z: integrand(matvec, z), probes, batch_size=batch_size)
    return mean_and_stderr(vals)


@checks_params
def trace_hessian(
    problem: Problem,
    params: PyTree,
    key: PRNGKeyArray,
    num_probes: int = 64,
    batch: PyTree | None = None,
    chunk_size: int | None = None,
) -> Estimate:
    """``tr H`` by Hutchinson with ``num_probes`` Rademacher probes, with its standard error (DESIGN §4)."""
    check_chunk_size(chunk_size)
    check_integer("num_probes", num_probes)
    if num_probes < 2:
        raise ValueError("`num_probes` must be >= 2 for a standard error")
    return _trace_hessian(problem, params, _data(problem, batch), key, num_probes, chunk_size)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _trace_hessian(problem, params, data, key, num_probes, chunk_size):
    return hutchinson(lambda v: _hvp(problem, params, v, data, chunk_size), params, key, num_probes)


@checks_params
def top_eigenvalues(
    problem: Problem,
    params: PyTree,
    k: int,
    key: PRNGKeyArray,
    num_matvecs: int | None = None,
    batch: PyTree | None = None,
    chunk_size: int | None = None,
) -> Eigs:
    """The ``k`` largest eigenvalues of ``H`` and their eigenvectors by Lanczos (matfree, full reorthogonalisation)
    over ``num_matvecs`` Hessian-vector products (default ``min(d, max(3k, 40))``) (DESIGN §4)."""
    d = problem.dim
    k = check_k(k, d)
    check_chunk_size(chunk_size)
    return lanczos_operator(
        problem, params, _data(problem, batch), key, "hessian", k, check_num_matvecs(num_matvecs, k, d), chunk_size
    )


class SpectralDensity(NamedTuple):
    """Stochastic Lanczos quadrature: Gaussian-smoothed spectral density ``phi(t) = (1/d) sum_j N(t; lambda_j, s^2)``
    on ``grid`` with a pointwise ``stderr`` over probes; ``nodes`` and ``weights`` ``(P, m)`` are the Ritz values
    and quadrature weights of each probe (weights sum to 1 per probe)."""

    grid: Float[Array, " G"]
    density: Float[Array, " G"]
    stderr: Float[Array, " G"]
    nodes: Float[Array, "P m"]
    weights: Float[Array, "P m"]


@checks_params
def spectral_density(
    problem: Problem,
    params: PyTree,
    key: PRNGKeyArray,
    num_probes: int = 8,
    num_matvecs: int = 40,
    grid: Float[Array, " G"] | int = 200,
    sigma: float | None = None,
    batch: PyTree | None = None,
    chunk_size: int | None = None,
) -> SpectralDensity:
    """Spectral density of ``H`` by stochastic Lanczos quadrature (Ghorbani, Krishnan & Xiao 2019) (DESIGN §4).

    Each of ``num_probes`` unit-norm Gaussian probes ``v`` gives an ``m = num_matvecs``-point Gauss quadrature
    ``v^T f(H) v ~ sum_l w_l f(theta_l)`` (``theta`` Ritz values, ``w`` squared first components of the Ritz
    vectors); averaging over probes estimates ``(1/d) tr f(H)``. ``grid``: points, or how many between the extreme
    nodes (padded by ``3 sigma``); ``sigma``: kernel width (default ``(max - min) / 100`` of the nodes).
    """
    num_probes = check_integer("num_probes", num_probes)
    if num_probes < 2:
        raise ValueError("`num_probes` must be >= 2 for a standard error")
    d = problem.dim
    num_matvecs = check_integer("num_matvecs", num_matvecs, 1, d, range_text=f"an integer in [1, d={d}]")
    check_chunk_size(chunk_size)
    nodes, weights = _slq(problem, params, _data(problem, batch), key, num_probes, num_matvecs, chunk_size)
    flat = ravel_pytree(params)[0]
    if sigma is None:
        spread = float(jnp.max(nodes) - jnp.min(nodes))
        sigma = spread / 100 if spread > 0 else 1e-3 * max(1.0, float(jnp.max(jnp.abs(nodes))))
    elif not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"`sigma` must be a finite number > 0, got {sigma!r}")
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        num = check_integer("grid", grid)
        grid = jnp.linspace(jnp.min(nodes) - 3 * sigma, jnp.max(nodes) + 3 * sigma, num)
    grid = jnp.asarray(grid, flat.dtype)
    kernel = jnp.exp(-0.5 * jnp.square((grid[None, None, :] - nodes[..., None]) / sigma)) / (
        sigma * math.sqrt(2 * math.pi)
    )
    per_probe = jnp.sum(weights[..., None] * kernel, axis=1)
    est = mean_and_stderr(per_probe)
    return SpectralDensity(grid, est.value, est.stderr, nodes, weights)


@functools.partial(jax.jit, static_argnums=(4, 5, 6))
def _slq(problem, params, data, key, num_probes, num_matvecs, chunk_size):
    from matfree import decomp

    mv, flat = _operator(problem, params, data, "hessian", chunk_size)
    tridiag = decomp.tridiag_sym(num_matvecs, custom_vjp=False)

    def one(k):
        v = jr.normal(k, flat.shape, flat.dtype)
        _, t, *_ = tridiag(mv, v)
        vals, vecs = jnp.linalg.eigh(t)
        return vals, jnp.square(vecs[0])

    return jax.lax.map(one, jr.split(key, num_probes))


class Alignment(NamedTuple):
    """How ``Sigma``, ``H`` and the empirical Fisher ``F = (1/n) sum_i g_i g_i^T = Sigma + g g^T`` line up (DESIGN §4).

    ``cosine``: ``tr(Sigma H) / (||Sigma||_F ||H||_F)``; ``trace_ratio``: ``tr Sigma / tr H``;
    ``overlap``: ``||U_S^T U_H||_F^2 / k``
    for the top-``k`` eigenvectors (1 when the eigenspaces coincide, about ``k/d`` at random); ``trace_sigma``,
    ``trace_hessian``, ``trace_fisher``; ``fisher_cosine``: cosine of ``Sigma`` and ``F``;
    ``fisher_hessian_cosine``: cosine
    of ``F`` and ``H``. Stochastic entries are :class:`Estimate` (stderr ``0`` when computed exactly).
    """

    cosine: Estimate
    trace_ratio: Estimate
    overlap: Array
    trace_sigma: Estimate
    trace_hessian: Estimate
    trace_fisher: Estimate
    fisher_cosine: Estimate
    fisher_hessian_cosine: Estimate


def _cos(tr_ab, fa2, fb2):
    return tr_ab / jnp.sqrt(fa2 * fb2)


def _from_parts(tr_s, tr_h, s2, h2, sh, gsg, ghg, g2):
    """All alignment numbers from ``tr Sigma, tr H, ||Sigma||^2, ||H||^2, tr(Sigma H), g^T Sigma g, g^T H g,
    ||g||^2``."""
    f2 = s2 + 2 * gsg + g2**2
    return jnp.array(
        [
            _cos(sh, s2, h2),
            tr_s / tr_h,
            tr_h,
            tr_s + g2,
            _cos(s2 + gsg, s2, f2),
            _cos(sh + ghg, f2, h2),
        ]
    )


def _alignment_exact(problem, params, key, k, num_probes, num_matvecs, chunk_size):
    """Dense ``Sigma`` and ``H``: the alignment numbers, zero errors, ``tr Sigma`` and the top-``k`` overlap."""
    data = problem.data
    flat, unravel = ravel_pytree(params)
    sigma = _sigma_matrix(problem, params, data, chunk_size)
    hess = jax.hessian(lambda x: problem.full_loss(unravel(x), chunk_size))(flat)
    hess = 0.5 * (hess + hess.T)
    g = ravel_pytree(problem.full_grad(params, chunk_size))[0]
    parts = _from_parts(
        jnp.trace(sigma),
        jnp.trace(hess),
        jnp.sum(sigma**2),
        jnp.sum(hess**2),
        jnp.sum(sigma * hess),
        g @ sigma @ g,
        g @ hess @ g,
        g @ g,
    )
    us = jnp.linalg.eigh(sigma)[1][:, ::-1][:, :k]
    uh = jnp.linalg.eigh(hess)[1][:, ::-1][:, :k]
    overlap = jnp.sum(jnp.square(us.T @ uh)) / k
    err = jnp.zeros_like(parts)
    tr_s = Estimate(jnp.trace(sigma), jnp.zeros(()))
    return parts, err, tr_s, overlap


def _alignment_matrix_free(problem, params, key, k, num_probes, num_matvecs, chunk_size):
    """Rademacher probes and Lanczos: the alignment numbers, their jackknife errors, ``tr Sigma``, the overlap."""
    data = problem.data
    d = problem.dim
    num_probes = check_integer("num_probes", num_probes)
    if num_probes < 3:
        raise ValueError("`num_probes` must be >= 3 for the jackknife standard error")
    parts, err, tr_s_val = _alignment_stochastic(problem, params, key, num_probes, chunk_size)
    tr_s = Estimate(tr_s_val, jnp.zeros(()))
    k_s, k_h = jr.split(jr.fold_in(key, 1))
    m = check_num_matvecs(num_matvecs, k, d)
    us = lanczos_operator(problem, params, data, k_s, "sigma", k, m, chunk_size).vectors
    uh = lanczos_operator(problem, params, data, k_h, "hessian", k, m, chunk_size).vectors
    overlap = jnp.sum(jnp.square(us @ uh.T)) / k
    return parts, err, tr_s, overlap


@checks_params
def alignment(
    problem: Problem,
    params: PyTree,
    key: PRNGKeyArray,
    *,
    k: int = 5,
    method: Literal["auto", "exact", "stochastic"] = "auto",
    num_probes: int = 64,
    num_matvecs: int | None = None,
    chunk_size: int | None = None,
) -> Alignment:
    """Alignment of the noise covariance ``Sigma`` with the Hessian ``H`` and the empirical Fisher (DESIGN §4).

    ``method="exact"`` forms ``Sigma`` and ``H`` densely (small ``d``); ``method="stochastic"`` is matrix-free:
    ``tr(Sigma H)``, ``||Sigma||_F^2``, ``||H||_F^2``, ``tr H`` as Rademacher averages of ``(Sigma z)^T (H z)``,
    ``||Sigma z||^2``, ``||H z||^2``, ``z^T H z`` over ``num_probes`` shared probes (stderr of the ratios by
    the delete-one jackknife), ``tr Sigma``, ``g^T Sigma g``, ``g^T H g`` exact, and the top-``k`` eigenvectors by
    Lanczos.
    ``"auto"``: exact when ``d <= 500``.
    """
    d = problem.dim
    k = check_k(k, d)
    check_chunk_size(chunk_size)
    parts, err, tr_s, overlap = choose("method", method, _ALIGNMENT)(
        problem, params, key, k, num_probes, num_matvecs, chunk_size
    )
    e = [Estimate(parts[i], err[i]) for i in range(6)]
    return Alignment(e[0], e[1], overlap, tr_s, e[2], e[3], e[4], e[5])


def _alignment_auto(problem, params, key, k, num_probes, num_matvecs, chunk_size):
    """Dense when ``d <= 500``, else matrix-free."""
    method = _alignment_exact if problem.dim <= 500 else _alignment_matrix_free
    return method(problem, params, key, k, num_probes, num_matvecs, chunk_size)


#: :func:`alignment`'s methods by name.
_ALIGNMENT = {"auto": _alignment_auto, "exact": _alignment_exact, "stochastic": _alignment_matrix_free}


@functools.partial(jax.jit, static_argnums=(3, 4))
def _alignment_stochastic(problem, params, key, num_probes, chunk_size):
    from matfree import stochtrace

    data = problem.data
    n = num_examples(data)
    g_flat, ss = _moments(problem, params, data, chunk_size)
    tr_s = ss / n
    _, unravel = ravel_pytree(params)
    g = unravel(g_flat)
    flat = lambda t: ravel_pytree(t)[0]  # noqa: E731
    gsg = g_flat @ flat(_sigma_matvec(problem, params, g, data, chunk_size))
    ghg = g_flat @ flat(_hvp(problem, params, g, data, chunk_size))
    g2 = g_flat @ g_flat
    probes = stochtrace.sampler_signs(params, num=num_probes)(key)

    def one(z):
        sz = flat(_sigma_matvec(problem, params, z, data, chunk_size))
        hz = flat(_hvp(problem, params, z, data, chunk_size))
        return jnp.array([sz @ sz, hz @ hz, sz @ hz, flat(z) @ hz])

    cols = jax.lax.map(one, probes)

    def stat(m):
        s2, h2, sh, tr_h = m
        return _from_parts(tr_s, tr_h, s2, h2, sh, gsg, ghg, g2)

    value = stat(jnp.mean(cols, axis=0))
    errs = jnp.stack([jackknife(lambda m, i=i: stat(m)[i], cols)[1] for i in range(6)])
    return value, errs, tr_s
