"""Matrix-free samples ``S(x)^{1/2} z`` of the SDE diffusion (DESIGN §3.2).

The SDE is ``dX = -b(X) dt + sqrt(eta) S(X)^{1/2} dW``; every sampler returns one draw of
``S^{1/2} z`` (a pytree like the parameters), never forming ``S`` or a ``d x d`` matrix:

* ``"leading"``: ``S = Cov_xi[G_0]``, the covariance of the variant's rho-free update ``G_0``. For every
  variant whose ``G_0`` is the batch gradient that is ``c(B) Sigma``: with ``u ~ N(0, I_n)``,
  ``Sigma^{1/2} z = (1/sqrt n) sum_i (u_i - mean u) g_i = (1/sqrt n) sum_i u_i (g_i - g)`` in distribution,
  the gradient of the randomly weighted loss ``(1/sqrt n) sum_i (u_i - mean u) f_i(x)``: ONE VJP. For RW-SAM
  with weights in the descent, ``G_0 = sum_i w_i g_i`` and ``S = Cov_xi[sum_i w_i g_i]`` is sampled as the
  ``"empirical"`` factor of the rho-free variant (below), not ``c(B) Sigma`` (which is wrong at ``O(1)``).
* ``"first_order"``: ``S = c(B)(Sigma + rho(H P Sigma + Sigma P H)) + O(rho^2)`` for the unnormalized
  ``batch`` rule (USAM, m-USAM, USAM-ON; Compagnoni et al. 2023, neglecting the randomness of
  ``H_gamma``). We sample ``(I + rho H P) (c(B) Sigma)^{1/2} z`` whose covariance is
  ``c(B)(I + rho H P) Sigma (I + rho P H)``, equal to that ``S`` up to ``O(rho^2)``: one VJP and one JVP.
  For SGD and n-USAM the ``rho`` term of ``G`` is deterministic to this order, so it equals ``"leading"``.
* ``"empirical"``: the covariance over batches of the actual perturbed update ``G(x; xi)`` of the variant
  (no expansion in ``rho``). When the batch distribution is enumerable (``k = 1`` and at most
  ``max_enumeration`` batches) the factor is exact:
  ``sum_r sqrt(p_r) z_r (G_r - sum_s p_s G_s)``, ``z ~ N(0, I_N)``, covariance exactly ``Cov_xi[G]``.
  Otherwise ``num_samples`` batches are drawn afresh at each call and the centred samples give the factor
  ``(1/sqrt(N-1)) sum_r z_r (G_r - mean G)``, whose covariance is the sample covariance of ``G`` (unbiased
  for ``Cov_xi[G]``, rank ``N - 1``). Cost: one update per batch in the support (or per sample).
* ``"none"``: ``0``.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._checks import check_positive
from .._problems._problem import Problem
from .._problems._sampler import Sampler
from .._variants._variant import Variant
from ._batches import MAX_ENUMERATION, NUM_SAMPLES, batch_distribution, check_spread, tree_weighted_sum
from ._choice import as_choice
from ._closed_form import first_order_noise_of, has_first_order_noise
from ._drift import sde_state

Params = PyTree


def standard_normal_weights(key: PRNGKeyArray, n: int, dtype) -> Float[Array, " n"]:
    """The ``u ~ N(0, I_n)`` behind one leading-order noise sample (exposed so tests can replay a path)."""
    return jr.normal(key, (n,), dtype)


def sigma_sqrt_times(problem: Problem, params: Params, u: Float[Array, " n"]) -> Params:
    """``(1/sqrt n) sum_i (u_i - mean u) g_i(x)``: ``Sigma^{1/2} z`` for ``u ~ N(0, I_n)``, one VJP (DESIGN §3.2)."""
    n = problem.num_examples
    weights = (u - jnp.mean(u)) / math.sqrt(n)
    _, vjp = jax.vjp(lambda p: problem.example_losses(p, problem.data), params)
    return vjp(weights.astype(u.dtype))[0]


def _scale(tree, s):
    return jax.tree_util.tree_map(lambda a: (s * a).astype(a.dtype), tree)


def leading_sample(
    problem: Problem,
    sampler: Sampler,
    params: Params,
    key: PRNGKeyArray,
    variant: Variant | None = None,
    *,
    num_samples: int = NUM_SAMPLES,
    max_enumeration: int = MAX_ENUMERATION,
) -> Params:
    """A draw with covariance ``Cov_xi[G_0]`` of the rho-free update (DESIGN §3.2, leading order):
    ``(c(B) Sigma)^{1/2} z``
    when ``G_0`` is the batch gradient (``variant=None`` means so), else the empirical factor of ``variant`` at
    ``rho = 0`` (RW-SAM with weights in the descent; ``num_samples``/``max_enumeration`` as there)."""
    if variant is not None and not variant.descent_is_batch_gradient:
        return empirical_sample(
            problem,
            variant.replace(rho=0.0),
            sampler,
            params,
            key,
            num_samples=num_samples,
            max_enumeration=max_enumeration,
        )
    n = problem.num_examples
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    c = sampler.factor(sampler.batch_size, n)
    u = standard_normal_weights(key, n, dtype)
    return _scale(sigma_sqrt_times(problem, params, u), math.sqrt(c))


def first_order_supported(variant: Variant) -> bool:
    """Whether the variant's rule gives a first-order diffusion (:func:`~sde_sam.sde.has_first_order_noise`)."""
    return (not variant.perturbs) or has_first_order_noise(variant.rule, variant)


def first_order_sample(
    problem: Problem, variant: Variant, sampler: Sampler, params: Params, key: PRNGKeyArray
) -> Params:
    """The first-order diffusion factor applied to ``(c(B) Sigma)^{1/2} z`` (DESIGN §3.2; the rule's
    :func:`~sde_sam.sde.first_order_noise_of`: ``(I + rho s H P)`` for the batch rule under a linear normalization,
    the identity for SGD and n-USAM)."""
    z = leading_sample(problem, sampler, params, key)
    if not variant.perturbs:
        return z
    out = first_order_noise_of(variant.rule, variant, problem, params, z)
    if out is None:
        raise ValueError(f"variant {variant.name!r} has no first-order diffusion; use 'leading' or 'empirical'")
    return out


def empirical_sample(
    problem: Problem,
    variant: Variant,
    sampler: Sampler,
    params: Params,
    key: PRNGKeyArray,
    *,
    num_samples: int = NUM_SAMPLES,
    max_enumeration: int = MAX_ENUMERATION,
) -> Params:
    """A draw with covariance ``Cov_xi[G(x; xi)]`` of the perturbed update (exact when enumerable; module docstring)."""
    n, B = problem.num_examples, sampler.batch_size
    k = variant.num_micro_batches(B)
    dtype = jax.tree_util.tree_leaves(params)[0].dtype
    dist_key, grad_key, z_key = jr.split(key, 3)
    # With k > 1 micro-batches the update depends on the partition of the batch: sample ordered batches.
    force = k > 1 or variant.rule.needs_monte_carlo
    dist = batch_distribution(
        sampler.with_replacement,
        n,
        B,
        key=dist_key,
        num_samples=num_samples,
        max_enumeration=max_enumeration,
        force_monte_carlo=force,
        dtype=dtype,
    )
    state = sde_state(problem, variant, params)

    def update(idx, r):
        G, _, _ = variant.gradient(problem, params, state, problem.take(idx), jr.fold_in(grad_key, r))
        return G

    Gs = jax.lax.map(lambda a: update(*a), (dist.indices, jnp.arange(dist.indices.shape[0])), batch_size=64)
    num = dist.indices.shape[0]
    z = jr.normal(z_key, (num,), dtype)
    mean = tree_weighted_sum(dist.probs, Gs)
    centred = jax.tree_util.tree_map(lambda a, m: a - m[None], Gs, mean)
    coeff = jnp.sqrt(dist.probs) * z if dist.exact else z / math.sqrt(max(num - 1, 1))
    return tree_weighted_sum(coeff, centred)


def zero_sample(params: Params) -> Params:
    return jax.tree_util.tree_map(jnp.zeros_like, params)


# -- the diffusion as a choice of the model (DESIGN §3.2, §3.4) -------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AbstractDiffusion(abc.ABC):
    """The diffusion ``S(x)`` of an SDE model (DESIGN §3.2): one family member per way of sampling ``S^{1/2} z``.

    A diffusion is called as ``diffusion(problem, variant, sampler, params, key) -> S^{1/2} z`` (a pytree like
    the parameters, never a ``d x d`` matrix); :meth:`supports` says whether it is defined for a variant."""

    #: The name in a result's configuration (and the string alias of :func:`sde_sam.sde_model`).
    name: ClassVar[str]
    #: ``S = 0``: the Euler-Maruyama step adds no noise.
    vanishes: ClassVar[bool] = False

    def supports(self, variant: Variant) -> bool:
        """Whether this diffusion is defined for ``variant``."""
        return True

    @abc.abstractmethod
    def __call__(
        self, problem: Problem, variant: Variant, sampler: Sampler, params: Params, key: PRNGKeyArray
    ) -> Params:
        """One draw of ``S(x)^{1/2} z``, ``z ~ N(0, I)``."""


@dataclasses.dataclass(frozen=True)
class _SampledDiffusion(AbstractDiffusion):
    """A diffusion whose covariance may be a Monte Carlo one over ``num_samples`` batches (exact by enumeration
    up to ``max_enumeration`` batches)."""

    num_samples: int = NUM_SAMPLES
    max_enumeration: int = MAX_ENUMERATION

    def __post_init__(self):
        check_positive("num_samples", self.num_samples, integer=True)
        check_spread("num_samples", self.num_samples)
        check_positive("max_enumeration", self.max_enumeration, integer=True)
        object.__setattr__(self, "num_samples", int(self.num_samples))
        object.__setattr__(self, "max_enumeration", int(self.max_enumeration))


@dataclasses.dataclass(frozen=True)
class LeadingDiffusion(_SampledDiffusion):
    """``S = Cov_xi[G_0]`` of the rho-free update (:func:`leading_sample`): ``c(B) Sigma``, one VJP; for RW-SAM with
    weights in the descent the empirical factor at ``rho = 0`` over ``num_samples`` batches. Every variant."""

    name: ClassVar[str] = "leading"

    def __call__(self, problem, variant, sampler, params, key):
        return leading_sample(
            problem,
            sampler,
            params,
            key,
            variant,
            num_samples=self.num_samples,
            max_enumeration=self.max_enumeration,
        )


@dataclasses.dataclass(frozen=True)
class FirstOrderDiffusion(AbstractDiffusion):
    """``S = c(B)(Sigma + rho(H P Sigma + Sigma P H))`` to first order in ``rho`` (:func:`first_order_sample`):
    SGD, n-USAM/n-SAM, random-direction SAM and the batch rule under a linear normalization (USAM, m-USAM,
    USAM-ON, DNSAM)."""

    name: ClassVar[str] = "first_order"

    def supports(self, variant):
        return first_order_supported(variant)

    def __call__(self, problem, variant, sampler, params, key):
        return first_order_sample(problem, variant, sampler, params, key)


@dataclasses.dataclass(frozen=True)
class EmpiricalDiffusion(_SampledDiffusion):
    """``S = Cov_xi[G]`` of the perturbed update, no expansion in ``rho`` (:func:`empirical_sample`): exact when
    enumerable, else over ``num_samples`` fresh batches per call. Every variant."""

    name: ClassVar[str] = "empirical"

    def __call__(self, problem, variant, sampler, params, key):
        return empirical_sample(
            problem,
            variant,
            sampler,
            params,
            key,
            num_samples=self.num_samples,
            max_enumeration=self.max_enumeration,
        )


@dataclasses.dataclass(frozen=True)
class NoDiffusion(AbstractDiffusion):
    """``S = 0``: the gradient-flow ODE of the drift."""

    name: ClassVar[str] = "none"
    vanishes: ClassVar[bool] = True

    def __call__(self, problem, variant, sampler, params, key):
        return zero_sample(params)


#: The diffusions by name: the string aliases of :func:`sde_sam.sde_model` (``diffusion="empirical"``).
DIFFUSION_CLASSES: dict[str, type[AbstractDiffusion]] = {
    cls.name: cls for cls in (LeadingDiffusion, FirstOrderDiffusion, EmpiricalDiffusion, NoDiffusion)
}

#: The names of the diffusions (the string aliases).
DIFFUSIONS = tuple(DIFFUSION_CLASSES)


def as_diffusion(diffusion: AbstractDiffusion | str, **options) -> AbstractDiffusion:
    """``diffusion`` as an :class:`AbstractDiffusion`: an object as it is (no ``options``), a name (``"leading"``,
    ``"first_order"``, ``"empirical"``, ``"none"``) as its class built with those of ``options`` it takes."""
    examples = "LeadingDiffusion(), EmpiricalDiffusion(), ..."
    return as_choice(diffusion, AbstractDiffusion, DIFFUSION_CLASSES, "diffusion", examples, only_taken=True, **options)
