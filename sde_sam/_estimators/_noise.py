"""Estimators of the stochastic gradient noise (DESIGN §4).

Notation (DESIGN §1): ``g_i = grad f_i``, ``g = (1/n) sum_i g_i``, ``Sigma = (1/n) sum_i (g_i - g)(g_i - g)^T``;
a size-``b`` batch mean ``g_gamma`` has covariance ``c(b) Sigma`` with the sampler's ``c(b)``.

Exact quantities (``trace_sigma``, ``sigma_matvec``, ``grad_trace_sigma``...) are returned as arrays;
stochastic ones as :class:`Estimate` ``(value, stderr)``. Flat vectors follow ``ravel_pytree`` order.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._checks import Literal, check_integer, choose
from .._problems._problem import Problem, _chunked_map, tree_norm_sq
from .._problems._sampler import AbstractSampler
from ._estimate import (
    Eigs,
    Estimate,
    check_chunk_size,
    check_k,
    check_sampler,
    checks_params,
    chunked_sum,
    flat_matvec,
    flat_rows,
    mean_and_stderr,
    num_examples,
)
from ._hessian import hessian_matvec

Sampler = AbstractSampler


def _data(problem: Problem, batch: PyTree | None) -> PyTree:
    return problem.data if batch is None else batch


# -- per-example gradients and exact moments -------------------------------------------------------------


@checks_params
def per_example_grads(
    problem: Problem, params: PyTree, batch: PyTree | None = None, chunk_size: int | None = None, flat: bool = False
) -> PyTree:
    """``(g_i(x))_i`` stacked on a leading axis, ``chunk_size`` examples at a time (DESIGN §4).

    With ``flat=True`` the result is the ``(n, d)`` matrix with rows ``g_i`` in ``ravel_pytree`` order.
    """
    check_chunk_size(chunk_size)
    grads = problem.per_example_grads(params, batch, chunk_size)
    return flat_rows(grads) if flat else grads


def _flat_grads_fn(problem: Problem, params: PyTree):
    grad_one = jax.grad(problem.loss_fn)

    def fn(chunk):
        return flat_rows(jax.vmap(grad_one, in_axes=(None, 0))(params, chunk))

    return fn


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _moments(problem: Problem, params: PyTree, data: PyTree, chunk_size: int | None):
    """Single pass over chunks: ``(g, sum_i ||g_i - g||^2)`` merged with Chan et al.'s pairwise update,
    which avoids the cancellation of ``mean ||g_i||^2 - ||g||^2`` in float32."""
    fn = _flat_grads_fn(problem, params)
    n = num_examples(data)

    def stats(chunk):
        rows = fn(chunk)
        mean = jnp.mean(rows, axis=0)
        return rows.shape[0], mean, jnp.sum(jnp.square(rows - mean))

    def merge(a, b):
        (na, ma, sa), (nb, mb, sb) = a, b
        tot = na + nb
        delta = mb - ma
        return tot, ma + delta * (nb / tot), sa + sb + jnp.sum(jnp.square(delta)) * (na * nb / tot)

    if chunk_size is None or chunk_size >= n:
        _, g, ss = stats(data)
        return g, ss
    num_full, rest = divmod(n, chunk_size)
    head = jax.tree_util.tree_map(
        lambda a: a[: num_full * chunk_size].reshape(num_full, chunk_size, *a.shape[1:]), data
    )
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    d = sum(np.size(a) for a in jax.tree_util.tree_leaves(params))
    init = (jnp.asarray(0.0, dtype), jnp.zeros(d, dtype), jnp.asarray(0.0, dtype))

    def body(acc, chunk):
        _, m, s = stats(chunk)
        return merge(acc, (jnp.asarray(chunk_size, dtype), m, s)), None

    acc, _ = jax.lax.scan(body, init, head)
    if rest:
        _, m, s = stats(jax.tree_util.tree_map(lambda a: a[num_full * chunk_size :], data))
        acc = merge(acc, (jnp.asarray(rest, dtype), m, s))
    _, g, ss = acc
    return g, ss


@checks_params
def trace_sigma(
    problem: Problem, params: PyTree, batch: PyTree | None = None, chunk_size: int | None = None
) -> Float[Array, ""]:
    """Exact ``tr Sigma = (1/n) sum_i ||g_i - g||^2 = mean_i ||g_i||^2 - ||g||^2`` (DESIGN §4).

    One pass of per-example gradients, ``chunk_size`` examples at a time (working memory ``chunk_size * d``);
    chunk statistics are merged in centred form. ``batch`` (default: all training data) restricts the sum.
    """
    check_chunk_size(chunk_size)
    data = _data(problem, batch)
    _, ss = _moments(problem, params, data, chunk_size)
    return ss / num_examples(data)


def _example_jvp(problem: Problem, params: PyTree, v: PyTree, data: PyTree, chunk_size: int | None) -> Array:
    """``(<g_i, v>)_i`` by forward mode, chunk by chunk (``n`` numbers; no per-example gradient is formed)."""
    return _chunked_map(lambda c: jax.jvp(lambda p: problem.example_losses(p, c), (params,), (v,))[1], data, chunk_size)


def _weighted_grad(problem: Problem, params: PyTree, weights: Array, data: PyTree, chunk_size: int | None) -> PyTree:
    """``sum_i w_i g_i`` by reverse mode, chunk by chunk."""

    def fn(chunk):
        c, w = chunk
        return jax.grad(lambda p: jnp.dot(w, problem.example_losses(p, c)))(params)

    return chunked_sum(fn, (data, weights), chunk_size)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _sigma_matvec(problem, params, v, data, chunk_size):
    u = _example_jvp(problem, params, v, data, chunk_size)
    w = (u - jnp.mean(u)) / u.shape[0]
    return _weighted_grad(problem, params, w, data, chunk_size)


@checks_params
def sigma_matvec(
    problem: Problem, params: PyTree, v: PyTree, batch: PyTree | None = None, chunk_size: int | None = None
) -> PyTree:
    """``Sigma v = (1/n) sum_i (g_i - g) <g_i - g, v> = (1/n) J^T (J v - mean(J v))`` matrix-free (DESIGN §4).

    ``J v`` (the ``n`` directional derivatives) by one forward-mode pass, then one reverse-mode pass of the
    loss reweighted by ``(J v - mean)/n``; both chunked. ``v`` has the structure of ``params``.
    """
    check_chunk_size(chunk_size)
    problem.check_params(v, "v")
    return _sigma_matvec(problem, params, v, _data(problem, batch), chunk_size)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _sigma_matrix(problem, params, data, chunk_size):
    g, _ = _moments(problem, params, data, chunk_size)
    fn = _flat_grads_fn(problem, params)

    def outer(chunk):
        rows = fn(chunk) - g
        return rows.T @ rows

    return chunked_sum(outer, data, chunk_size) / num_examples(data)


@checks_params
def sigma_matrix(
    problem: Problem, params: PyTree, batch: PyTree | None = None, chunk_size: int | None = None
) -> Float[Array, "d d"]:
    """The dense ``d x d`` matrix ``Sigma`` (small ``d`` only; accumulated chunk by chunk)."""
    check_chunk_size(chunk_size)
    return _sigma_matrix(problem, params, _data(problem, batch), chunk_size)


@checks_params
def sigma_top_eigs(
    problem: Problem,
    params: PyTree,
    k: int,
    key: PRNGKeyArray,
    *,
    method: Literal["randomized", "lanczos"] = "randomized",
    oversample: int = 10,
    num_iters: int = 4,
    num_matvecs: int | None = None,
    batch: PyTree | None = None,
    chunk_size: int | None = None,
) -> Eigs:
    """Top-``k`` eigenpairs of ``Sigma`` from matrix-free products ``Sigma v`` (DESIGN §4).

    ``method="randomized"``: randomized subspace iteration (Halko, Martinsson & Tropp 2011) with ``k + oversample``
    columns and ``num_iters`` power steps, i.e. a randomized SVD of the centred per-example gradient matrix
    ``(g_i - g)_i / sqrt(n)`` without forming it. ``method="lanczos"``: Lanczos with full reorthogonalisation
    (matfree) over ``num_matvecs`` (default ``min(d, max(3k, 40))``) products.
    """
    d = problem.dim
    k = check_k(k, d)
    check_chunk_size(chunk_size)
    top = choose("method", method, _TOP_EIGS)
    data = _data(problem, batch)
    return top(problem, params, data, key, k, oversample, num_iters, num_matvecs, chunk_size)


def _randomized_top(problem, params, data, key, k, oversample, num_iters, num_matvecs, chunk_size) -> Eigs:
    check_integer("num_iters", num_iters)
    check_integer("oversample", oversample, low=0)
    return _randomized_sigma_eigh(
        problem, params, data, key, k, min(problem.dim, k + oversample), num_iters, chunk_size
    )


def _lanczos_top(problem, params, data, key, k, oversample, num_iters, num_matvecs, chunk_size) -> Eigs:
    m = check_num_matvecs(num_matvecs, k, problem.dim)
    return lanczos_operator(problem, params, data, key, "sigma", k, m, chunk_size)


#: :func:`sigma_top_eigs`'s methods by name.
_TOP_EIGS = {"randomized": _randomized_top, "lanczos": _lanczos_top}


def _operator(problem, params, data, which, chunk_size):
    """The flat operator ``Sigma`` (``which="sigma"``) or ``H`` (``which="hessian"``) and the flat ``params``."""
    matvec = {"sigma": _sigma_matvec, "hessian": hessian_matvec}[which]
    return flat_matvec(lambda v: matvec(problem, params, v, data, chunk_size), params)


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _randomized_sigma_eigh(problem, params, data, key, k, width, num_iters, chunk_size) -> Eigs:
    mv, flat = _operator(problem, params, data, "sigma", chunk_size)
    bmv = jax.vmap(mv, in_axes=1, out_axes=1)
    omega = jr.normal(key, (flat.shape[0], width), flat.dtype)
    q, _ = jnp.linalg.qr(bmv(omega))
    for _ in range(num_iters):
        q, _ = jnp.linalg.qr(bmv(q))
    small = q.T @ bmv(q)
    vals, vecs = jnp.linalg.eigh(0.5 * (small + small.T))
    order = jnp.argsort(vals)[::-1][:k]
    return Eigs(vals[order], (q @ vecs[:, order]).T)


def check_num_matvecs(num_matvecs, k: int, d: int) -> int:
    if num_matvecs is None:
        return min(d, max(3 * k, 40))
    return check_integer("num_matvecs", num_matvecs, k, d, range_text=f"an integer in [k={k}, d={d}]")


def lanczos_top(mv, flat, k: int, key: PRNGKeyArray, num_matvecs: int, v0: Array | None = None) -> Eigs:
    """Top-``k`` (largest algebraic) Ritz pairs of a symmetric flat operator ``mv`` by Lanczos with full
    reorthogonalisation over ``num_matvecs`` products (``matfree.decomp.tridiag_sym`` +
    ``matfree.eig.eigh_partial``), started from ``v0`` (default: a Gaussian vector from ``key``)."""
    from matfree import decomp, eig

    eigh = eig.eigh_partial(decomp.tridiag_sym(int(num_matvecs), custom_vjp=False))
    if v0 is None:
        v0 = jr.normal(key, flat.shape, flat.dtype)
    vals, vecs = eigh(mv, v0)
    order = jnp.argsort(vals)[::-1][:k]
    vectors = vecs[order]
    return Eigs(vals[order], vectors / jnp.linalg.norm(vectors, axis=1, keepdims=True))


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def lanczos_operator(problem, params, data, key, which, k, num_matvecs, chunk_size) -> Eigs:
    """:func:`lanczos_top` on ``Sigma`` or ``H`` (see :func:`_operator`), compiled once per configuration."""
    mv, flat = _operator(problem, params, data, which, chunk_size)
    return lanczos_top(mv, flat, k, key, num_matvecs)


# -- mini-batch estimators -------------------------------------------------------------------------------


def _draw(sampler: Sampler, key: PRNGKeyArray, n: int) -> Array:
    """One batch of ``sampler.batch_size`` indices from the sampler's marginal law (i.i.d. uniform draws with
    replacement; a uniform subset without)."""
    if sampler.with_replacement:
        return jr.randint(key, (sampler.batch_size,), 0, n)
    return jr.choice(key, n, (sampler.batch_size,), replace=False)


def _batch_grads(problem, params, sampler, keys, chunk_size, fn=None):
    """``fn(g_gamma)`` (default: flat ``g_gamma``) for one independent batch per key, ``chunk_size`` at a time."""
    n = problem.num_examples

    def one(key):
        g = problem.batch_grad(params, problem.take(_draw(sampler, key, n)))
        return ravel_pytree(g)[0] if fn is None else fn(g)

    return jax.lax.map(one, keys, batch_size=chunk_size)


@checks_params
def trace_sigma_minibatch(
    problem: Problem,
    params: PyTree,
    sampler: Sampler,
    key: PRNGKeyArray,
    num_batches: int = 64,
    *,
    use_full_grad: bool = True,
    chunk_size: int | None = None,
) -> Estimate:
    """``tr Sigma`` from micro-batch gradients only, no per-example gradients (DESIGN §4).

    Draws ``K = num_batches`` independent batches ``gamma_j`` of size ``m = sampler.batch_size`` from the sampler's
    law, so ``E ||g_gamma - g||^2 = c(m) tr Sigma`` with the sampler's ``c(m)``:

    - ``use_full_grad=True``: ``(1/K) sum_j ||g_{gamma_j} - g||^2 / c(m)`` (``g`` by one full-batch pass), stderr
      ``std/sqrt(K)``;
    - ``use_full_grad=False``: the unbiased sample variance ``(1/(K-1)) sum_j ||g_{gamma_j} - gbar||^2 / c(m)``,
      stderr by
      the delete-one jackknife (needs ``K >= 3``).

    ``chunk_size``: batches evaluated at once (memory ``chunk_size * m * d``).
    """
    n = problem.num_examples
    check_sampler(sampler, n)
    num_batches = check_integer("num_batches", num_batches)
    if chunk_size is not None:
        check_integer("chunk_size", chunk_size)
    c = sampler.factor(sampler.batch_size, n)
    if c == 0:
        raise ValueError(f"c(m) = 0 for m = n = {n} without replacement: the full batch carries no noise")
    if use_full_grad and num_batches < 2:
        raise ValueError(f"`num_batches` must be >= 2 for a standard error, got {num_batches}")
    if not use_full_grad and num_batches < 3:
        raise ValueError(f"`num_batches` must be >= 3 without the full gradient (jackknife), got {num_batches}")
    return _trace_sigma_minibatch(problem, params, sampler, key, num_batches, use_full_grad, chunk_size, c)


@functools.partial(jax.jit, static_argnums=(2, 4, 5, 6, 7))
def _trace_sigma_minibatch(problem, params, sampler, key, num_batches, use_full_grad, chunk_size, c):
    grads = _batch_grads(problem, params, sampler, jr.split(key, num_batches), chunk_size)
    if use_full_grad:
        g = ravel_pytree(problem.full_grad(params))[0]
        est = mean_and_stderr(jnp.sum(jnp.square(grads - g), axis=1))
        return Estimate(est.value / c, est.stderr / c)
    k = num_batches
    sq = jnp.sum(jnp.square(grads), axis=1)
    total = jnp.sum(grads, axis=0)
    q = jnp.sum(sq)
    value = (q - jnp.sum(jnp.square(total)) / k) / (k - 1)
    rest_sq = jnp.sum(jnp.square(total)) - 2 * grads @ total + sq  # ||T - g_j||^2
    loo = (q - sq - rest_sq / (k - 1)) / (k - 2)
    stderr = jnp.sqrt((k - 1) / k * jnp.sum(jnp.square(loo - jnp.mean(loo))))
    return Estimate(value / c, stderr / c)


@checks_params
def variance_sharpness(
    problem: Problem, params: PyTree, rho: float, sampler: Sampler, chunk_size: int | None = None
) -> Float[Array, ""]:
    """The variance-based sharpness term ``(rho/2) c(m) tr Sigma`` of m-USAM's drift (DESIGN §3.1), with
    ``m = sampler.batch_size`` and the sampler's ``c(m)``; ``tr Sigma`` exact."""
    if isinstance(rho, bool) or not isinstance(rho, (int, float, np.floating)) or not math.isfinite(rho) or rho < 0:
        raise ValueError(f"`rho` must be a finite number >= 0, got {rho!r}")
    check_sampler(sampler, problem.num_examples)
    c = sampler.factor(sampler.batch_size, problem.num_examples)
    return 0.5 * rho * c * trace_sigma(problem, params, chunk_size=chunk_size)


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def _grad_trace_sigma(problem, params, data, chunk_size):
    g = jax.lax.stop_gradient(problem.full_grad(params, chunk_size))
    n = num_examples(data)
    grad_one = jax.grad(problem.loss_fn)

    def fn(chunk):
        def centred_sq(p):
            gi = jax.vmap(grad_one, in_axes=(None, 0))(p, chunk)
            diff = jax.tree_util.tree_map(lambda a, b: a - b, gi, g)
            return tree_norm_sq(diff)

        return jax.grad(centred_sq)(params)

    return jax.tree_util.tree_map(lambda a: a / n, chunked_sum(fn, data, chunk_size))


@checks_params
def grad_trace_sigma(
    problem: Problem, params: PyTree, batch: PyTree | None = None, chunk_size: int | None = None
) -> PyTree:
    """``grad tr Sigma = (2/n) sum_i H_i g_i - 2 H g = (2/n) sum_i H_i (g_i - g)`` (DESIGN §3.1, §4).

    Computed as the gradient of ``(1/n) sum_i ||g_i(x) - c||^2`` at ``c = g(x)`` held fixed (per-example
    Hessian-vector products ``H_i (g_i - g)`` by reverse-over-reverse), chunk by chunk.
    """
    check_chunk_size(chunk_size)
    return _grad_trace_sigma(problem, params, _data(problem, batch), chunk_size)


class BatchGradNorm(NamedTuple):
    """``E||g_gamma||`` and its gradient ``E[H_gamma g_gamma / ||g_gamma||]``, each with a standard error."""

    value: Estimate
    grad: Estimate


@checks_params
def expected_batch_grad_norm(
    problem: Problem,
    params: PyTree,
    sampler: Sampler,
    key: PRNGKeyArray,
    num_batches: int = 256,
    chunk_size: int | None = None,
) -> BatchGradNorm:
    """Monte Carlo ``E_gamma ||grad f_gamma(x)||`` for ``|gamma| = sampler.batch_size`` drawn by ``sampler``, and
    its gradient ``grad_x E||g_gamma|| = E[H_gamma g_gamma / ||g_gamma||]`` (the quantity of the paper's
    Prop. 3.9; m-SAM's regularizer, DESIGN §3.1). Stderr ``std/sqrt(K)`` (leafwise for the gradient).
    ``chunk_size``: batches evaluated at once."""
    n = problem.num_examples
    check_sampler(sampler, n)
    num_batches = check_integer("num_batches", num_batches)
    if num_batches < 2:
        raise ValueError("`num_batches` must be >= 2 for a standard error")
    if chunk_size is not None:
        check_integer("chunk_size", chunk_size)
    return _expected_batch_grad_norm(problem, params, sampler, key, num_batches, chunk_size)


def expected_effective_sample_size(
    rule,
    problem: Problem,
    params: PyTree,
    sampler: Sampler,
    key: PRNGKeyArray,
    num_batches: int = 32,
) -> Estimate:
    """Monte Carlo ``E_gamma[1 / sum_i p_i^2]``: the mean over batches drawn by ``sampler`` of Kish's effective
    sample size of the weights ``rule`` (a perturbation rule, or a variant: its rule) puts on a batch's examples
    (RW-SAM's Gibbs weights; ``B`` for rules that weigh examples alike). Stderr ``std/sqrt(K)``."""
    rule = getattr(rule, "rule", rule)
    if not callable(getattr(rule, "effective_sample_size", None)):
        raise TypeError(f"`rule` must be a perturbation rule or a variant, got {type(rule).__name__}")
    check_sampler(sampler, problem.num_examples)
    num_batches = check_integer("num_batches", num_batches)
    if num_batches < 2:
        raise ValueError("`num_batches` must be >= 2 for a standard error")
    return _expected_effective_sample_size(rule, problem, params, sampler, key, num_batches)


@functools.partial(jax.jit, static_argnums=(0, 3, 5))
def _expected_effective_sample_size(rule, problem, params, sampler, key, num_batches):
    n = problem.num_examples

    def one(k):
        k_batch, k_rule = jr.split(k)
        return rule.effective_sample_size(problem, params, problem.take(_draw(sampler, k_batch, n)), k_rule)

    return mean_and_stderr(jax.lax.map(one, jr.split(key, num_batches)))


@functools.partial(jax.jit, static_argnums=(2, 4, 5))
def _expected_batch_grad_norm(problem, params, sampler, key, num_batches, chunk_size):
    n = problem.num_examples

    def one(k):
        batch = problem.take(_draw(sampler, k, n))
        return jax.value_and_grad(lambda p: jnp.sqrt(tree_norm_sq(problem.batch_grad(p, batch))))(params)

    vals, grads = jax.lax.map(one, jr.split(key, num_batches), batch_size=chunk_size)
    value = mean_and_stderr(vals)
    mean = jax.tree_util.tree_map(lambda a: jnp.mean(a, axis=0), grads)
    err = jax.tree_util.tree_map(lambda a: jnp.std(a, axis=0, ddof=1) / math.sqrt(num_batches), grads)
    return BatchGradNorm(value, Estimate(mean, err))


# -- shape of the noise ----------------------------------------------------------------------------------


@checks_params
def projected_noise(
    problem: Problem,
    params: PyTree,
    sampler: Sampler,
    key: PRNGKeyArray,
    num_batches: int = 512,
    num_directions: int = 8,
    chunk_size: int | None = None,
) -> Float[Array, "K D"]:
    """Samples of the mini-batch noise ``u_j^T (g_gamma - g)``: ``K = num_batches`` independent batches drawn by
    ``sampler``, projected on ``D = num_directions`` fixed random unit directions ``u_j``. Returns ``(K, D)``."""
    n = problem.num_examples
    check_sampler(sampler, n)
    num_batches = check_integer("num_batches", num_batches)
    num_directions = check_integer("num_directions", num_directions)
    if chunk_size is not None:
        check_integer("chunk_size", chunk_size)
    return _projected_noise(problem, params, sampler, key, num_batches, num_directions, chunk_size)


@functools.partial(jax.jit, static_argnums=(2, 4, 5, 6))
def _projected_noise(problem, params, sampler, key, num_batches, num_directions, chunk_size):
    k_dir, k_batch = jr.split(key)
    g = ravel_pytree(problem.full_grad(params))[0]
    u = jr.normal(k_dir, (num_directions, g.shape[0]), g.dtype)
    u = u / jnp.linalg.norm(u, axis=1, keepdims=True)
    keys = jr.split(k_batch, num_batches)
    return _batch_grads(problem, params, sampler, keys, chunk_size, fn=lambda gb: u @ (ravel_pytree(gb)[0] - g))


def _inv_alpha_stable(x: Array, block: int) -> Array:
    """Mohammadi, Mohammadpour & Ogata (2015) estimator of ``1/alpha`` for each column of ``x`` ``(K, D)``:
    ``1/alpha = (mean log|Y| - mean log|X|) / log K1`` with ``Y`` the sums over blocks of ``K1 = block`` rows."""
    k = x.shape[0] // block * block
    x = x[:k]
    y = jnp.sum(x.reshape(k // block, block, x.shape[1]), axis=1)
    tiny = jnp.finfo(x.dtype).tiny
    return (jnp.mean(jnp.log(jnp.abs(y) + tiny), 0) - jnp.mean(jnp.log(jnp.abs(x) + tiny), 0)) / math.log(block)


def _inv_alpha_hill(x: Array, num_tail: int) -> Array:
    """Hill (1975) estimator of ``1/alpha`` per column from the ``num_tail`` largest ``|x|``."""
    a = -jnp.sort(-jnp.abs(x), axis=0)
    tiny = jnp.finfo(x.dtype).tiny
    return jnp.mean(jnp.log(a[:num_tail] + tiny), axis=0) - jnp.log(a[num_tail] + tiny)


def _stable_estimator(k: int, block: int | None, num_tail: int | None):
    block = math.isqrt(k) if block is None else block
    block = check_integer("block", block, 2, k // 2, range_text=f"an integer in [2, K/2={k // 2}]")
    return functools.partial(_inv_alpha_stable, block=block)


def _hill_estimator(k: int, block: int | None, num_tail: int | None):
    num_tail = math.isqrt(k) if num_tail is None else num_tail
    num_tail = check_integer("num_tail", num_tail, 1, k - 1, range_text=f"an integer in [1, K-1={k - 1}]")
    return functools.partial(_inv_alpha_hill, num_tail=num_tail)


#: :func:`tail_index_from_samples`'s methods by name: ``(K, block, num_tail) -> 1/alpha`` of a column.
_TAIL_INDEX = {"stable": _stable_estimator, "hill": _hill_estimator}


def tail_index_from_samples(
    samples: Float[Array | np.ndarray, "K D"],
    key: PRNGKeyArray,
    *,
    method: Literal["stable", "hill"] = "stable",
    block: int | None = None,
    num_tail: int | None = None,
    num_bootstrap: int = 200,
) -> Estimate:
    """Tail index ``alpha`` of the columns of ``samples`` (``K`` draws of ``D`` scalar projections), combined as
    ``alpha = 1 / mean_j (1/alpha_j)``; stderr by bootstrap over the ``K`` rows (DESIGN §4).

    ``method="stable"``: the alpha-stable estimator of Mohammadi et al. (2015) used by Simsekli et al. (2019),
    blocks of ``block`` rows (default ``floor(sqrt(K))``); ``alpha = 2`` for Gaussian noise, ``< 2`` heavy-tailed.
    ``method="hill"``: Hill's estimator on the ``num_tail`` largest ``|x|`` (default ``floor(sqrt(K))``).
    """
    x = jnp.asarray(samples)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"`samples` must have shape (K,) or (K, D), got {x.shape}")
    k = x.shape[0]
    if k < 8:
        raise ValueError(f"`samples` needs at least 8 rows (draws), got {k}")
    num_bootstrap = check_integer("num_bootstrap", num_bootstrap)
    if num_bootstrap < 2:
        raise ValueError("`num_bootstrap` must be >= 2")
    inv = choose("method", method, _TAIL_INDEX)(k, block, num_tail)

    def alpha(xx):
        return 1.0 / jnp.mean(inv(xx))

    idx = jr.randint(key, (num_bootstrap, k), 0, k)
    boots = jax.jit(jax.vmap(lambda i: alpha(x[i])))(idx)
    return Estimate(alpha(x), jnp.std(boots, ddof=1))


@checks_params
def tail_index(
    problem: Problem,
    params: PyTree,
    sampler: Sampler,
    key: PRNGKeyArray,
    num_batches: int = 1024,
    num_directions: int = 8,
    *,
    method: Literal["stable", "hill"] = "stable",
    num_bootstrap: int = 200,
    chunk_size: int | None = None,
) -> Estimate:
    """Tail index of the projected mini-batch noise ``u^T (g_gamma - g)`` (see :func:`projected_noise` and
    :func:`tail_index_from_samples`), with a bootstrap standard error (DESIGN §4)."""
    k_noise, k_boot = jr.split(key)
    x = projected_noise(problem, params, sampler, k_noise, num_batches, num_directions, chunk_size)
    return tail_index_from_samples(x, k_boot, method=method, num_bootstrap=num_bootstrap)


class Gaussianity(NamedTuple):
    """Gaussianity diagnostics of projected noise, one column per direction.

    ``pvalues`` ``(D,)``: D'Agostino-Pearson ``scipy.stats.normaltest`` per direction; ``rejection_rate``: fraction of
    directions with ``p < level`` (stderr binomial, treating directions as independent); ``skewness`` and
    ``excess_kurtosis``: means over directions (both ``0`` for Gaussian noise), stderr by bootstrap over draws.
    """

    pvalues: np.ndarray
    rejection_rate: Estimate
    skewness: Estimate
    excess_kurtosis: Estimate


def gaussianity_from_samples(
    samples: Float[Array, "K D"], key: PRNGKeyArray, *, level: float = 0.05, num_bootstrap: int = 200
) -> Gaussianity:
    """Gaussianity check of the columns of ``samples`` (see :class:`Gaussianity`)."""
    from scipy import stats

    x = np.asarray(samples, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < 20:
        raise ValueError(f"`samples` must have shape (K, D) with K >= 20 draws, got {x.shape}")
    if not 0 < level < 1:
        raise ValueError(f"`level` must be in (0, 1), got {level!r}")
    num_bootstrap = check_integer("num_bootstrap", num_bootstrap)
    pvalues = np.asarray(stats.normaltest(x, axis=0).pvalue)
    rate = float(np.mean(pvalues < level))
    d = x.shape[1]

    def moments(xx):
        c = xx - jnp.mean(xx, axis=0)
        m2 = jnp.mean(c**2, axis=0)
        return jnp.array([jnp.mean(jnp.mean(c**3, axis=0) / m2**1.5), jnp.mean(jnp.mean(c**4, axis=0) / m2**2 - 3.0)])

    xj = jnp.asarray(x, jnp.result_type(float))
    idx = jr.randint(key, (num_bootstrap, x.shape[0]), 0, x.shape[0])
    boots = np.asarray(jax.jit(jax.vmap(lambda i: moments(xj[i])))(idx))
    value = np.asarray(moments(xj))
    err = boots.std(axis=0, ddof=1)
    return Gaussianity(
        pvalues,
        Estimate(rate, math.sqrt(max(rate * (1 - rate), level * (1 - level)) / d)),
        Estimate(float(value[0]), float(err[0])),
        Estimate(float(value[1]), float(err[1])),
    )


@checks_params
def gaussianity(
    problem: Problem,
    params: PyTree,
    sampler: Sampler,
    key: PRNGKeyArray,
    num_batches: int = 512,
    num_directions: int = 8,
    *,
    level: float = 0.05,
    num_bootstrap: int = 200,
    chunk_size: int | None = None,
) -> Gaussianity:
    """Is the mini-batch noise ``u^T (g_gamma - g)`` Gaussian? (DESIGN §4; see :class:`Gaussianity`)."""
    k_noise, k_boot = jr.split(key)
    x = projected_noise(problem, params, sampler, k_noise, num_batches, num_directions, chunk_size)
    return gaussianity_from_samples(x, k_boot, level=level, num_bootstrap=num_bootstrap)
