"""SDE drift ``b(x) = E_xi[G(x; xi)]``: exact in ``rho``, or to first order in ``rho`` (DESIGN §3.1, §3.3).

:func:`expected_drift` is the mean step itself, ``E_xi[G(x; xi)]`` with no expansion in ``rho`` (the drift of
the moment-matching SME; with the empirical diffusion ``Cov_xi[G]`` it is the SDE that SVAG converges to).
Two independent implementations of the first-order drift:

* :func:`general_drift`, the general first-order rule
  ``b = E[(1/k) sum_j (g_{gamma_j} + rho H_{gamma_j} N(M d_j))]`` (descent weights replace the plain means
  where a variant has them), with the direction ``d_j`` taken from the variant itself and the
  Hessian-vector product ``H_{gamma_j} v`` as one ``jax.jvp`` of the batch gradient (never a ``d x d``
  Hessian). The expectation is over batches (micro-batches of size ``m`` for the ``batch`` rule, whose
  terms depend on one micro-batch only), exact by enumeration when small, Monte Carlo otherwise.
* :func:`closed_form_drift`, the formulas of DESIGN §3.1 written with per-example gradients:
  ``grad[f + (rho/2)((1 - c(m))||P g||^2 + c(m) mean_i ||P g_i||^2)]`` for the unnormalized batch rule
  (``= grad[f + (rho/2)(||P g||^2 + c(m) tr(P Sigma P))]``), ``grad[f + rho E||P g_m||]`` for the normalized
  one, and ``sum_i H_i v_i`` with exact per-example coefficients ``v_i`` for F-SAM and RW-SAM.

F-SAM's EMA is modelled as tracking the full gradient, ``mu = g`` (DESIGN §3.1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ._batches import MAX_ENUMERATION, NUM_SAMPLES, BatchDistribution, batch_distribution, expectation
from ._problem import Problem
from ._runner import check_sampler
from ._sampler import Sampler
from ._variants import Variant, apply_mask, resolve_mask, safe_normalize

Params = PyTree


def _check(problem, variant, sampler):
    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be a sde_sam.Problem, got {type(problem).__name__}")
    if not isinstance(variant, Variant):
        raise TypeError(f"`variant` must be a sde_sam.variants.Variant, got {type(variant).__name__}")
    check_sampler(sampler, problem)
    variant.check(sampler.batch_size, problem.num_examples)


def sde_state(problem: Problem, variant: Variant, params: Params) -> PyTree:
    """The variant state the SDE uses at ``x``: F-SAM's EMA ``mu = g(x)`` (DESIGN §3.1); else the init state."""
    if variant.rule == "friendly":
        return problem.full_grad(params)
    return variant.init(params)


def _dtype(params):
    return jax.tree_util.tree_leaves(params)[0].dtype


def expectation_batch_size(variant: Variant, sampler: Sampler) -> int:
    """The size of the batches the drift's expectation runs over: ``m`` for the ``batch`` rule, else ``B``."""
    if variant.rule == "batch" and variant.micro_batch_size is not None:
        return variant.micro_batch_size
    return sampler.batch_size


def drift_distribution(
    problem: Problem, variant: Variant, sampler: Sampler, *, key=None, num_samples=NUM_SAMPLES,
    max_enumeration=MAX_ENUMERATION, dtype=jnp.float32,
) -> BatchDistribution:
    """The batch distribution the drift expectation of ``variant`` runs over (DESIGN §3.1).

    RW-SAM with finite-difference scores draws a Rademacher vector per batch, so its expectation is
    always Monte Carlo (over batches and that vector jointly)."""
    force = variant.rule == "reweighted" and variant.score == "finite_difference"
    return batch_distribution(
        sampler.replace, problem.num_examples, expectation_batch_size(variant, sampler), key=key,
        num_samples=num_samples, max_enumeration=max_enumeration, force_monte_carlo=force, dtype=dtype,
    )


def _linear_in_batch(variant: Variant) -> bool:
    """SGD and n-SAM: the update is linear in the batch, so its mean is the full-data value."""
    return not variant.perturbs or variant.rule == "full"


# -- exact in rho ---------------------------------------------------------------------------------------------


def expected_drift(
    problem: Problem,
    variant: Variant,
    sampler: Sampler,
    params: Params,
    *,
    key: PRNGKeyArray | None = None,
    num_samples: int = NUM_SAMPLES,
    max_enumeration: int = MAX_ENUMERATION,
    return_stderr: bool = False,
) -> Params | tuple[Params, Params]:
    """The mean step ``b(x) = E_xi[G(x; xi)]`` of the discrete update, no expansion in ``rho``.

    ``G`` is :meth:`Variant.gradient` itself (every rule, normalization, mask, micro-batch and descent weight
    as the discrete run has them; F-SAM's EMA at its SDE value ``mu = g``, DESIGN §3.1). The expectation
    runs over what ``G`` depends on: a size-``m`` micro-batch when the update is a mean of per-micro-batch
    terms (m-SAM, m-USAM: ``E[(1/k) sum_j h(gamma_j)] = E[h(gamma)]``), else the size-``B`` batch (and RW-SAM's
    Rademacher probe). It is exact by enumeration when the support has at most ``max_enumeration`` batches
    (or the update is linear in the batch: SGD, n-SAM), else an unbiased Monte Carlo mean over
    ``num_samples`` fresh batches drawn from ``key`` (``None``: ``jr.key(0)``); ``return_stderr`` adds the
    leafwise standard error (zeros when exact). Same batches as :func:`general_drift` for the same key.
    """
    return _mean_over_batches(
        problem, variant, sampler, params, lambda st, batch, k: variant.gradient(problem, params, st, batch, k)[0],
        key=key, num_samples=num_samples, max_enumeration=max_enumeration, return_stderr=return_stderr)


def _mean_over_batches(problem, variant, sampler, params, update, *, key, num_samples, max_enumeration,
                       return_stderr):
    """``E[update(state, batch, key)]`` (an update at ``params``) over the drift's batch distribution: the
    full-data value when the update is linear in the batch (SGD: ``g``; n-SAM: its full-data step), else exact
    by enumeration or Monte Carlo (with stderr)."""
    _check(problem, variant, sampler)
    zeros = lambda t: jax.tree_util.tree_map(jnp.zeros_like, t)  # noqa: E731
    if _linear_in_batch(variant):
        b = update(variant.init(params), problem.data, jr.key(0))
        return (b, zeros(b)) if return_stderr else b
    state = sde_state(problem, variant, params)
    key = jr.key(0) if key is None else key
    dist_key, sample_key = jr.split(key)
    dist = drift_distribution(problem, variant, sampler, key=dist_key, num_samples=num_samples,
                              max_enumeration=max_enumeration, dtype=_dtype(params))
    b, err = expectation(lambda idx, k: update(state, problem.take(idx), k), dist, sample_key)
    return (b, err) if return_stderr else b


# -- the general first-order rule --------------------------------------------------------------------------


def linearized_update(
    problem: Problem, variant: Variant, params: Params, state: PyTree, batch: PyTree, key: PRNGKeyArray
) -> Params:
    """``(1/k) sum_j (grad L_j(x) + rho H_{L_j}(x) N(M d_j))`` for one batch: the update ``G`` of
    :meth:`Variant.gradient` linearized in ``rho`` (``L_j`` the micro-batch mean or the descent-weighted
    sum); each term is one ``jax.jvp`` of ``grad L_j`` (DESIGN §3.1)."""
    if not variant.perturbs:
        return problem.batch_grad(params, batch)
    d, descent_weights, _, loss = variant.directions(problem, params, state, batch, key)
    mask_tree = resolve_mask(variant.mask, params)
    d = jax.vmap(lambda dj: apply_mask(mask_tree, dj))(d)
    if variant.normalize:
        d = jax.vmap(safe_normalize)(d)
    k = jax.tree_util.tree_leaves(d)[0].shape[0]
    B = jax.tree_util.tree_leaves(batch)[0].shape[0]
    if variant.rule == "batch":
        micro = jax.tree_util.tree_map(lambda a: a.reshape(k, B // k, *a.shape[1:]), batch)
    else:
        micro = jax.tree_util.tree_map(lambda a: a[None], batch)

    def term(d_j, batch_j, w_j):
        def loss_fn(p):
            ell = problem.example_losses(p, batch_j)
            return jnp.mean(ell) if w_j is None else jnp.sum(w_j * ell)

        g, hv = jax.jvp(jax.grad(loss_fn), (params,), (d_j,))
        return jax.tree_util.tree_map(lambda a, b: a + variant.rho * b, g, hv)

    if descent_weights is None:
        terms = jax.vmap(lambda dj, bj: term(dj, bj, None))(d, micro)
    else:
        terms = jax.vmap(term)(d, micro, descent_weights.astype(_dtype(params)))
    return jax.tree_util.tree_map(lambda a: jnp.mean(a, axis=0), terms)


def general_drift(
    problem: Problem,
    variant: Variant,
    sampler: Sampler,
    params: Params,
    *,
    key: PRNGKeyArray | None = None,
    num_samples: int = NUM_SAMPLES,
    max_enumeration: int = MAX_ENUMERATION,
    return_stderr: bool = False,
) -> Params | tuple[Params, Params]:
    """Drift by the general rule ``b = E[(1/k) sum_j (g_{gamma_j} + rho H_{gamma_j} N(M d_j))]`` (DESIGN §3.1).

    The expectation is exact when the batch support has at most ``max_enumeration`` elements (or the
    rule makes it linear in the batch: SGD, n-SAM), otherwise a Monte Carlo mean over ``num_samples``
    batches drawn with ``key`` (``None``: the fixed ``jr.key(0)``). With ``return_stderr`` also returns
    the leafwise Monte Carlo standard error (zeros when exact).
    """
    return _mean_over_batches(
        problem, variant, sampler, params, lambda st, batch, k: linearized_update(problem, variant, params, st, batch, k),
        key=key, num_samples=num_samples, max_enumeration=max_enumeration, return_stderr=return_stderr)


# -- closed forms ---------------------------------------------------------------------------------------------


def _flat_mask(variant: Variant, params: Params) -> Array | None:
    tree = resolve_mask(variant.mask, params)
    if tree is None:
        return None
    return ravel_pytree(jax.tree_util.tree_map(lambda m, a: jnp.full(jnp.shape(a), m, a.dtype), tree, params))[0]


def _flat_example_grads(problem: Problem, params: Params) -> Float[Array, "n d"]:
    g = problem.per_example_grads(params)
    return jax.vmap(lambda gi: ravel_pytree(gi)[0])(g)


def _safe_norm(v: Array, axis=-1) -> Array:
    sq = jnp.sum(jnp.square(v), axis=axis)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def _normalize_rows(v: Array) -> Array:
    return v / jnp.maximum(_safe_norm(v), 1e-12)[..., None]


def _micro_mean_weights(dist: BatchDistribution, n: int) -> Array:
    """``W[r, i]`` = multiplicity of example ``i`` in batch ``r`` divided by the batch size."""
    size = dist.indices.shape[1]
    return jax.vmap(lambda row: jnp.zeros(n, dist.probs.dtype).at[row].add(1.0 / size))(dist.indices)


def expected_micro_batch_grad_norm(
    problem: Problem,
    params: Params,
    micro_batch_size: int,
    sampler: Sampler,
    *,
    mask=None,
    key: PRNGKeyArray | None = None,
    num_samples: int = NUM_SAMPLES,
    max_enumeration: int = MAX_ENUMERATION,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """``(E||P g_m(x)||, stderr)``: expected norm of a size-``m`` micro-batch gradient (DESIGN §3.1, m-SAM).

    ``mask``: ``None`` (``P = I``), a predicate on parameter paths or a pytree of booleans (SAM-ON). Exact by
    enumerating subsets (``WithoutReplacement``) or multisets (``WithReplacement``) when there are at most
    ``max_enumeration`` of them (stderr 0), otherwise Monte Carlo over ``num_samples`` micro-batches.
    Differentiable in ``params`` (the drift of m-SAM is ``g + rho grad E||P g_m||``).
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be a sde_sam.Problem, got {type(problem).__name__}")
    check_sampler(sampler, problem)
    n = problem.num_examples
    dist = batch_distribution(sampler.replace, n, micro_batch_size, key=key, num_samples=num_samples,
                              max_enumeration=max_enumeration, dtype=_dtype(params))
    frozen = Variant("mask", mask=mask).mask
    value, per = _expected_norm(problem, params, dist, Variant("mask", mask=frozen))
    if dist.exact:
        return value, jnp.zeros_like(value)
    return value, jnp.std(per, ddof=1) / jnp.sqrt(per.shape[0])


def _expected_norm(problem, params, dist, variant):
    G = _flat_example_grads(problem, params)
    P = _flat_mask(variant, params)
    if P is not None:
        G = G * P
    norms = _safe_norm(_micro_mean_weights(dist, problem.num_examples) @ G)
    return jnp.dot(dist.probs, norms), norms


def _example_hvp_sum(problem: Problem, params: Params, V: Float[Array, "n d"]) -> Params:
    """``sum_i H_i(x) v_i`` (``v_i`` rows of ``V``): one ``jax.jvp`` of ``grad f_i`` per example (vmapped)."""
    _, unravel = ravel_pytree(params)
    grad_one = jax.grad(problem.loss_fn)

    def one(ex, v):
        return ravel_pytree(jax.jvp(lambda p: grad_one(p, ex), (params,), (unravel(v),))[1])[0]

    return unravel(jnp.sum(jax.vmap(one)(problem.data, V), axis=0))


def _scatter_rows(dist: BatchDistribution, coeff: Array, U: Array, n: int) -> Array:
    """``V[i] = sum_r sum_{slots q of batch r holding i} coeff[r, q] * U[r]``."""
    V = jnp.zeros((n, U.shape[1]), U.dtype)
    return V.at[dist.indices.reshape(-1)].add((coeff[..., None] * U[:, None, :]).reshape(-1, U.shape[1]))


def closed_form_drift(
    problem: Problem,
    variant: Variant,
    sampler: Sampler,
    params: Params,
    *,
    key: PRNGKeyArray | None = None,
    num_samples: int = NUM_SAMPLES,
    max_enumeration: int = MAX_ENUMERATION,
) -> Params:
    """Drift by the closed forms of DESIGN §3.1 (``P`` the SAM-ON mask, identity without one):

    * SGD: ``g``; n-USAM / n-SAM: ``grad[f + (rho/2)||P g||^2]`` / ``grad[f + rho ||P g||]``;
    * USAM, m-USAM, USAM-ON: ``grad[f + (rho/2)(||P g||^2 + c(m) tr(P Sigma P))]`` (``m = B`` without micro-batches);
    * SAM, m-SAM, SAM-ON: ``grad[f + rho E||P g_m||]``;
    * F-USAM: ``grad[f + (rho/2)((1 - sigma)||P g||^2 + c(B) tr(P Sigma P))]``;
      F-SAM: ``g + rho E[H_gamma u]``, ``u = N(P(g_gamma - sigma g))``;
    * RW-SAM: ``g + rho E[H_gamma N(P d_w)]`` (ascent-only weights) or
      ``E[sum_i w_i g_i] + rho E[sum_i w_i H_i N(P d_w)]`` (weights in the descent).

    ``tr(P Sigma P) = mean_i ||P g_i||^2 - ||P g||^2`` is exact (per-example gradients) and its gradient
    comes from ``jax.grad`` of that expression (reverse over the vmapped per-example gradient), which is
    one backward pass through the per-example gradients. Expectations (normalized rules) are exact by
    enumeration when small, Monte Carlo otherwise (same batches as :func:`general_drift` for a given key).
    """
    _check(problem, variant, sampler)
    if not variant.perturbs:
        return problem.full_grad(params)
    rho, n = variant.rho, problem.num_examples
    P = _flat_mask(variant, params)
    masked = (lambda v: v) if P is None else (lambda v: v * P)  # noqa: E731
    flat_of = lambda t: ravel_pytree(t)[0]  # noqa: E731

    if variant.rule == "full":
        def reg(p):
            pg = masked(flat_of(problem.full_grad(p)))
            return rho * _safe_norm(pg) if variant.normalize else 0.5 * rho * jnp.sum(jnp.square(pg))

        return jax.grad(lambda p: problem.full_loss(p) + reg(p))(params)

    if not variant.normalize and variant.rule in ("batch", "friendly"):
        m = expectation_batch_size(variant, sampler)
        c = sampler.factor(m, n)
        w_mean = (1.0 - variant.sigma) if variant.rule == "friendly" else 1.0

        def objective(p):
            G = masked(_flat_example_grads(problem, p))
            g = jnp.mean(G, axis=0)
            g_sq = jnp.sum(jnp.square(g))
            tr_sigma = jnp.mean(jnp.sum(jnp.square(G), axis=1)) - g_sq
            return jnp.mean(problem.example_losses(p, problem.data)) + 0.5 * rho * (w_mean * g_sq + c * tr_sigma)

        return jax.grad(objective)(params)

    key = jr.key(0) if key is None else key
    dist_key, sample_key = jr.split(key)
    dist = drift_distribution(problem, variant, sampler, key=dist_key, num_samples=num_samples,
                              max_enumeration=max_enumeration, dtype=_dtype(params))

    if variant.rule == "batch":  # normalized: g + rho grad E||P g_m||
        def objective(p):
            value, _ = _expected_norm(problem, p, dist, variant)
            return problem.full_loss(p) + rho * value

        return jax.grad(objective)(params)

    G = _flat_example_grads(problem, params)
    g = jnp.mean(G, axis=0)
    s = dist.indices.shape[1]
    _, unravel = ravel_pytree(params)
    if variant.rule == "friendly":  # normalized F-SAM: g + rho E[H_gamma N(P(g_gamma - sigma g))]
        g_batch = _micro_mean_weights(dist, n) @ G
        U = _normalize_rows(masked(g_batch - variant.sigma * g))
        coeff = jnp.broadcast_to(dist.probs[:, None] / s, dist.indices.shape)
        return jax.tree_util.tree_map(lambda a, b: a + rho * b, unravel(g), _example_hvp_sum(problem, params, _scatter_rows(dist, coeff, U, n)))

    # reweighted (RW-SAM / RW-USAM): weights from the variant's own score, one key per batch as in general_drift.
    def weights_of(idx, r):
        batch = problem.take(idx)
        losses = problem.example_losses(params, batch)
        return jax.lax.stop_gradient(variant.reweighting(problem, params, batch, losses, jr.fold_in(sample_key, r)))

    W = jax.vmap(weights_of)(dist.indices, jnp.arange(dist.indices.shape[0]))  # (N, s)
    d_w = jnp.einsum("rq,rqd->rd", W, G[dist.indices])
    U = masked(d_w)
    if variant.normalize:
        U = _normalize_rows(U)
    if variant.weights_in_descent:
        coeff = dist.probs[:, None] * W
        descent = jnp.einsum("rq,rqd->d", coeff, G[dist.indices])
    else:
        coeff = jnp.broadcast_to(dist.probs[:, None] / s, dist.indices.shape)
        descent = g
    hv = _example_hvp_sum(problem, params, _scatter_rows(dist, coeff, U, n))
    return jax.tree_util.tree_map(lambda a, b: a + rho * b, unravel(descent), hv)


# -- second-order SME correction ------------------------------------------------------------------------------


def second_order(drift_fn, params: Params, eta: float) -> Params:
    """``b + (eta/2) (Db) b`` (DESIGN §3.3): one ``jax.jvp`` of the drift along itself."""
    b, db_b = jax.jvp(drift_fn, (params,), (drift_fn(params),))
    return jax.tree_util.tree_map(lambda a, c: a + 0.5 * eta * c, b, db_b)
