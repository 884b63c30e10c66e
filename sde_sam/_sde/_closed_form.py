"""Closed forms of the first-order drift and diffusion of the built-in rules (DESIGN §3.1, §3.2).

Dispatched on the rule's type by :func:`closed_form_of` (registered at the end of this module), written with
per-example gradients (``P`` the SAM-ON mask, ``s`` the scale of a linear normalization: ``1`` for the identity,
``1/||P g||`` for DNSAM, held fixed under the gradient):

* n-USAM / n-SAM: ``grad[f + (rho s/2)||P g||^2]`` / ``grad[f + rho ||P g||]``;
* USAM, m-USAM, USAM-ON, DNSAM: ``g + rho s grad[(1/2)(||P g||^2 + c(m) tr(P Sigma P))]`` (``m = B`` without
  micro-batches; for DNSAM this is Compagnoni et al.'s ``g + rho H g/||g||`` plus the term from the randomness of
  ``H_gamma``, ``(rho/||g||) E[(H_gamma - H)(g_gamma - g)]``);
* SAM, m-SAM, SAM-ON: ``grad[f + rho E||P g_m||]``;
* F-USAM: ``g + rho s grad[(1/2)((1 - sigma)||P g||^2 + c(B) tr(P Sigma P))]``; F-SAM: ``g + rho E[H_gamma u]``,
  ``u = N(P(g_gamma - sigma g))``;
* RW-SAM: ``g + rho E[H_gamma N(P d_w)]`` (ascent-only weights) or ``E[sum_i w_i g_i] + rho E[sum_i w_i H_i N(P d_w)]``
  (weights in the descent).

A variant with a preconditioner (ASAM) has no closed form here (``None``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import jax.random as jr
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree

from .._problems._problem import Problem
from .._variants._perturbation import apply_mask, resolve_mask
from .._variants._rules import (
    AbstractRule,
    BatchGradient,
    Friendly,
    FullGradient,
    NoAscent,
    RandomDirection,
    Reweighted,
)
from ._batches import BatchDistribution, batch_distribution

Params = PyTree


def _dtype(params):
    return jax.tree_util.tree_leaves(params)[0].dtype


def drift_distribution(problem, variant, sampler, *, key, num_samples, max_enumeration, dtype) -> BatchDistribution:
    """The batch distribution the drift expectation of ``variant`` runs over (DESIGN §3.1): batches of the rule's
    expectation size; Monte Carlo (over batches and the rule's own draws jointly) when the rule draws random numbers."""
    return batch_distribution(
        sampler.with_replacement,
        problem.num_examples,
        variant.rule.expectation_batch_size(sampler.batch_size),
        key=key,
        num_samples=num_samples,
        max_enumeration=max_enumeration,
        force_monte_carlo=variant.rule.needs_monte_carlo,
        dtype=dtype,
    )


def flat_mask(mask, params: Params) -> Array | None:
    tree = resolve_mask(mask, params)
    if tree is None:
        return None
    return ravel_pytree(jax.tree_util.tree_map(lambda m, a: jnp.full(jnp.shape(a), m, a.dtype), tree, params))[0]


def flat_example_grads(problem: Problem, params: Params) -> Float[Array, "n d"]:
    g = problem.per_example_grads(params)
    return jax.vmap(lambda gi: ravel_pytree(gi)[0])(g)


def safe_norm(v: Array, axis=-1) -> Array:
    sq = jnp.sum(jnp.square(v), axis=axis)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def normalize_rows(v: Array) -> Array:
    return v / jnp.maximum(safe_norm(v), 1e-12)[..., None]


def batch_means(dist: BatchDistribution, G: Float[Array, "n d"]) -> Float[Array, "N d"]:
    """Row ``r``: the mean of ``G`` over the examples of batch ``r`` (with multiplicity), by a gather of the
    ``N * s`` rows it needs (``O(N s d)``, where a dense ``N x n`` weight matrix costs ``O(N n d)``)."""
    return jnp.mean(G[dist.indices], axis=1)


def expected_norm(problem, params, dist, mask):
    """``(E||P g_m||, per-batch norms)`` over ``dist``."""
    G = flat_example_grads(problem, params)
    P = flat_mask(mask, params)
    if P is not None:
        G = G * P
    norms = safe_norm(batch_means(dist, G))
    return jnp.dot(dist.probs, norms), norms


def example_hvp_sum(problem: Problem, params: Params, V: Float[Array, "n d"]) -> Params:
    """``sum_i H_i(x) v_i`` (``v_i`` rows of ``V``): one ``jax.jvp`` of ``grad f_i`` per example (vmapped)."""
    _, unravel = ravel_pytree(params)
    grad_one = jax.grad(problem.loss_fn)

    def one(ex, v):
        return ravel_pytree(jax.jvp(lambda p: grad_one(p, ex), (params,), (unravel(v),))[1])[0]

    return unravel(jnp.sum(jax.vmap(one)(problem.data, V), axis=0))


def scatter_rows(dist: BatchDistribution, coeff: Array, U: Array, n: int) -> Array:
    """``V[i] = sum_r sum_{slots q of batch r holding i} coeff[r, q] * U[r]``."""
    V = jnp.zeros((n, U.shape[1]), U.dtype)
    return V.at[dist.indices.reshape(-1)].add((coeff[..., None] * U[:, None, :]).reshape(-1, U.shape[1]))


def _masked(variant, params):
    P = flat_mask(variant.mask, params)
    return (lambda v: v) if P is None else (lambda v: v * P)


def _linear_scale(variant, problem, params):
    """``s`` of a linear normalization at ``params``, held fixed (a Python ``1.0`` for the identity)."""
    s = variant.normalization.linear_scale(problem, params, resolve_mask(variant.mask, params))
    return s if isinstance(s, float) else jax.lax.stop_gradient(s)


def _quadratic_regularizer_drift(variant, problem, sampler, params, w_mean: float):
    """``g + rho s grad[(1/2)(w ||P g||^2 + c(m) tr(P Sigma P))]``; ``tr(P Sigma P) = mean_i ||P g_i||^2 - ||P g||^2``
    exact from per-example gradients, its gradient by ``jax.grad`` (one backward pass through them)."""
    masked = _masked(variant, params)
    m = variant.rule.expectation_batch_size(sampler.batch_size)
    c = sampler.factor(m, problem.num_examples)
    coef = 0.5 * variant.rho * _linear_scale(variant, problem, params)

    def objective(p):
        G = masked(flat_example_grads(problem, p))
        g = jnp.mean(G, axis=0)
        g_sq = jnp.sum(jnp.square(g))
        tr_sigma = jnp.mean(jnp.sum(jnp.square(G), axis=1)) - g_sq
        return jnp.mean(problem.example_losses(p, problem.data)) + coef * (w_mean * g_sq + c * tr_sigma)

    return jax.grad(objective)(params)


def drift_batches(variant, problem, sampler, params, key, num_samples, max_enumeration):
    """``(distribution, sample_key)`` from ``key`` (``None``: ``jr.key(0)``): the first half of the split draws the
    Monte Carlo batches, the second the per-batch keys (the same batches for every drift given one key)."""
    key = jr.key(0) if key is None else key
    dist_key, sample_key = jr.split(key)
    dist = drift_distribution(
        problem,
        variant,
        sampler,
        key=dist_key,
        num_samples=num_samples,
        max_enumeration=max_enumeration,
        dtype=_dtype(params),
    )
    return dist, sample_key


def full_rule(rule, variant, problem, sampler, params, *, key, num_samples, max_enumeration):
    if variant.preconditioner is not None:
        return None
    masked = _masked(variant, params)
    flat_of = lambda t: ravel_pytree(t)[0]  # noqa: E731
    unit = variant.normalization.unit
    coef = 0.0 if unit else 0.5 * variant.rho * _linear_scale(variant, problem, params)

    def reg(p):
        pg = masked(flat_of(problem.full_grad(p)))
        return variant.rho * safe_norm(pg) if unit else coef * jnp.sum(jnp.square(pg))

    return jax.grad(lambda p: problem.full_loss(p) + reg(p))(params)


def batch_rule(rule, variant, problem, sampler, params, *, key, num_samples, max_enumeration):
    if variant.preconditioner is not None:
        return None
    if variant.normalization.linear:
        return _quadratic_regularizer_drift(variant, problem, sampler, params, 1.0)
    if not variant.normalization.unit:
        return None
    dist, _ = drift_batches(variant, problem, sampler, params, key, num_samples, max_enumeration)

    def objective(p):  # normalized: g + rho grad E||P g_m||
        value, _ = expected_norm(problem, p, dist, variant.mask)
        return problem.full_loss(p) + variant.rho * value

    return jax.grad(objective)(params)


def _normalized_rows(variant, problem, params, U):
    if variant.normalization.unit:
        return normalize_rows(U)
    s = _linear_scale(variant, problem, params)
    return U if isinstance(s, float) and s == 1.0 else U * s


def _per_example_setup(variant, problem, params, dist):
    """``(mask, n, rho, G, g, s, unravel)``: per-example gradients ``G`` (n, d), their mean ``g``, batch size ``s``."""
    G = flat_example_grads(problem, params)
    _, unravel = ravel_pytree(params)
    n, s = problem.num_examples, dist.indices.shape[1]
    return _masked(variant, params), n, variant.rho, G, jnp.mean(G, axis=0), s, unravel


def friendly_rule(rule, variant, problem, sampler, params, *, key, num_samples, max_enumeration):
    if variant.preconditioner is not None or not (variant.normalization.linear or variant.normalization.unit):
        return None
    if variant.normalization.linear:
        return _quadratic_regularizer_drift(variant, problem, sampler, params, rule.one_minus_sigma)
    dist, _ = drift_batches(variant, problem, sampler, params, key, num_samples, max_enumeration)
    masked, n, rho, G, g, s, unravel = _per_example_setup(variant, problem, params, dist)
    # normalized F-SAM: g + rho E[H_gamma N(P(g_gamma - sigma g))]
    U = normalize_rows(masked(batch_means(dist, G) - rule.sigma * g))
    coeff = jnp.broadcast_to(dist.probs[:, None] / s, dist.indices.shape)
    hv = example_hvp_sum(problem, params, scatter_rows(dist, coeff, U, n))
    return jax.tree_util.tree_map(lambda a, b: a + rho * b, unravel(g), hv)


def reweighted_rule(rule, variant, problem, sampler, params, *, key, num_samples, max_enumeration):
    if variant.preconditioner is not None or not (variant.normalization.linear or variant.normalization.unit):
        return None
    dist, sample_key = drift_batches(variant, problem, sampler, params, key, num_samples, max_enumeration)
    masked, n, rho, G, g, s, unravel = _per_example_setup(variant, problem, params, dist)

    def weights_of(idx, r):  # the rule's own score, one key per batch as in general_drift
        batch = problem.take(idx)
        losses = problem.example_losses(params, batch)
        return jax.lax.stop_gradient(rule.reweighting(problem, params, batch, losses, jr.fold_in(sample_key, r)))

    W = jax.vmap(weights_of)(dist.indices, jnp.arange(dist.indices.shape[0]))  # (N, s)
    d_w = jnp.einsum("rq,rqd->rd", W, G[dist.indices])
    U = _normalized_rows(variant, problem, params, masked(d_w))
    if rule.weights_in_descent:
        coeff = dist.probs[:, None] * W
        descent = jnp.einsum("rq,rqd->d", coeff, G[dist.indices])
    else:
        coeff = jnp.broadcast_to(dist.probs[:, None] / s, dist.indices.shape)
        descent = g
    hv = example_hvp_sum(problem, params, scatter_rows(dist, coeff, U, n))
    return jax.tree_util.tree_map(lambda a, b: a + rho * b, unravel(descent), hv)


def hessian_corrected_noise(variant, problem: Problem, params: Params, z: Params) -> Params:
    """``(I + rho s H P) z`` (DESIGN §3.2): with ``z = (c(B) Sigma)^{1/2} u``, the first-order diffusion factor of
    the batch rule under a linear normalization (USAM, m-USAM, USAM-ON; DNSAM's ``(I + rho H/||g||) Sigma^{1/2}``,
    Compagnoni et al. 2023). One JVP."""
    mask_tree = resolve_mask(variant.mask, params)
    pz = apply_mask(mask_tree, z)
    _, hv = jax.jvp(lambda p: problem.full_grad(p), (params,), (pz,))
    s = variant.normalization.linear_scale(problem, params, mask_tree)
    if isinstance(s, float) and s == 1.0:
        return jax.tree_util.tree_map(lambda a, b: a + variant.rho * b, z, hv)
    return jax.tree_util.tree_map(lambda a, b: a + (variant.rho * s).astype(b.dtype) * b, z, hv)


# -- dispatch on the rule's type (register your own rule's formulas here) ------------------------------------------


@functools.singledispatch
def closed_form_of(
    rule: AbstractRule, variant, problem: Problem, sampler, params: Params, *, key, num_samples, max_enumeration
) -> Params | None:
    """The first-order drift of ``variant`` from a formula (DESIGN §3.1), dispatched on the type of its ``rule``;
    ``None`` where the rule has none. Register a rule's formula with ``closed_form_of.register(MyRule)`` and say
    where it is defined with ``has_closed_form.register(MyRule)``."""
    return None


@functools.singledispatch
def has_closed_form(rule: AbstractRule, variant) -> bool:
    """Whether :func:`closed_form_of` gives ``variant``'s drift (so ``ClosedFormDrift().supports(variant)``)."""
    return False


@functools.singledispatch
def first_order_noise_of(rule: AbstractRule, variant, problem: Problem, params: Params, z: Params) -> Params | None:
    """Given ``z = (c(B) Sigma)^{1/2} u``, a draw of the first-order diffusion factor (DESIGN §3.2), dispatched on
    the type of the ``rule``; ``None`` where the rule has none (register with ``first_order_noise_of.register``
    and :func:`has_first_order_noise`)."""
    return None


@functools.singledispatch
def has_first_order_noise(rule: AbstractRule, variant) -> bool:
    """Whether :func:`first_order_noise_of` is defined for ``variant`` (``FirstOrderDiffusion().supports``)."""
    return False


def _identity_noise(rule, variant, problem, params, z):
    return z  # the rho term of G is deterministic (or symmetric) to first order


def _always(rule, variant) -> bool:
    return True


def _no_preconditioner(rule, variant) -> bool:
    return variant.preconditioner is None


def _linear_or_unit(rule, variant) -> bool:
    return _no_preconditioner(rule, variant) and (variant.normalization.linear or variant.normalization.unit)


def _linear(rule, variant) -> bool:
    return _no_preconditioner(rule, variant) and variant.normalization.linear


def _batch_noise(rule, variant, problem, params, z):
    return hessian_corrected_noise(variant, problem, params, z) if _linear(rule, variant) else None


def _random_direction_drift(rule, variant, problem, sampler, params, **kw):
    return problem.full_grad(params)  # E[H_gamma N(T M z)] = E[H_gamma] E[N(T M z)] = 0: z is symmetric


for _rule, _drift_fn, _drift_defined, _noise_fn, _noise_defined in (
    (NoAscent, None, None, _identity_noise, _always),
    (BatchGradient, batch_rule, _linear_or_unit, _batch_noise, _linear),
    (FullGradient, full_rule, _no_preconditioner, _identity_noise, _always),
    (Friendly, friendly_rule, _linear_or_unit, None, None),
    (Reweighted, reweighted_rule, _linear_or_unit, None, None),
    (RandomDirection, _random_direction_drift, _always, _identity_noise, _always),
):
    if _drift_fn is not None:
        closed_form_of.register(_rule, _drift_fn)
        has_closed_form.register(_rule, _drift_defined)
    if _noise_fn is not None:
        first_order_noise_of.register(_rule, _noise_fn)
        has_first_order_noise.register(_rule, _noise_defined)
