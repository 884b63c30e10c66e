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

import abc
import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._checks import check_positive
from .._problems._problem import Problem, tree_norm_sq
from .._problems._sampler import Sampler
from .._training._runner import check_sampler
from .._variants._perturbation import freeze_mask
from .._variants._variant import Variant
from ._batches import (
    CHUNK,
    MAX_ENUMERATION,
    NUM_SAMPLES,
    batch_distribution,
    check_spread,
    expectation,
    support_size,
)
from ._choice import as_choice
from ._closed_form import closed_form_of, drift_batches, expected_norm, has_closed_form
from ._closed_form import drift_distribution as drift_distribution

Params = PyTree


def _check(problem, variant, sampler):
    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be a sde_sam.Problem, got {type(problem).__name__}")
    if not isinstance(variant, Variant):
        raise TypeError(f"`variant` must be a sde_sam.variants.Variant, got {type(variant).__name__}")
    check_sampler(sampler, problem)
    variant.check(sampler.batch_size, problem.num_examples, problem.init_params)


def sde_state(problem: Problem, variant: Variant, params: Params) -> PyTree:
    """The variant state the SDE uses at ``x`` (F-SAM's EMA ``mu = g(x)``, DESIGN §3.1; else the init state)."""
    return variant.rule.sde_state(problem, params)


def _dtype(params):
    return jax.tree_util.tree_leaves(params)[0].dtype


def expectation_batch_size(variant: Variant, sampler: Sampler) -> int:
    """The size of the batches the drift's expectation runs over: ``m`` for micro-batches, else ``B``."""
    return variant.rule.expectation_batch_size(sampler.batch_size)


def _linear_in_batch(variant: Variant) -> bool:
    """SGD and n-SAM: the update is linear in the batch, so its mean is the full-data value."""
    return not variant.perturbs or variant.rule.linear_in_batch


def drift_is_exact(problem: Problem, variant: Variant, sampler: Sampler, max_enumeration: int) -> bool:
    """Whether the drift's expectation is exact (linear in the batch, or its support enumerated) rather than
    Monte Carlo (a support above ``max_enumeration`` batches, or a rule that draws random numbers)."""
    if _linear_in_batch(variant):
        return True
    if variant.rule.needs_monte_carlo:
        return False
    size = expectation_batch_size(variant, sampler)
    return support_size(sampler.with_replacement, problem.num_examples, size) <= max_enumeration


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

    def update(st, batch, k, centred):
        G = variant.gradient(problem, params, st, batch, k)[0]
        return jax.tree_util.tree_map(jnp.subtract, G, problem.batch_grad(params, batch)) if centred else G

    return _mean_over_batches(
        problem,
        variant,
        sampler,
        params,
        update,
        key=key,
        num_samples=num_samples,
        max_enumeration=max_enumeration,
        return_stderr=return_stderr,
    )


def _mean_over_batches(problem, variant, sampler, params, update, *, key, num_samples, max_enumeration, return_stderr):
    """``E[update(state, batch, key)]`` (an update at ``params``) over the drift's batch distribution: the
    full-data value when the update is linear in the batch (SGD: ``g``; n-SAM: its full-data step), else exact
    by enumeration, else Monte Carlo with the batch gradient as control variate:
    ``E[G] = g + E[G - g_batch]`` (``E[g_batch] = g`` exactly for uniform batches), so only the perturbation's
    part of the update is sampled and the standard error is that part's (docs/sde.md measures the gain).
    ``update(state, batch, key, centred)``."""
    _check(problem, variant, sampler)
    zeros = lambda t: jax.tree_util.tree_map(jnp.zeros_like, t)  # noqa: E731
    if _linear_in_batch(variant):
        b = update(variant.init(params), problem.data, jr.key(0), False)
        return (b, zeros(b)) if return_stderr else b
    state = sde_state(problem, variant, params)
    dist, sample_key = drift_batches(variant, problem, sampler, params, key, num_samples, max_enumeration)
    if dist.exact:
        b, err = expectation(lambda idx, k: update(state, problem.take(idx), k, False), dist, sample_key)
    else:
        c, err = expectation(lambda idx, k: update(state, problem.take(idx), k, True), dist, sample_key)
        b = jax.tree_util.tree_map(jnp.add, problem.full_grad(params), c)
    return (b, err) if return_stderr else b


# -- the general first-order rule --------------------------------------------------------------------------


def linearized_update(
    problem: Problem,
    variant: Variant,
    params: Params,
    state: PyTree,
    batch: PyTree,
    key: PRNGKeyArray,
    centred: bool = False,
) -> Params:
    """``(1/k) sum_j (grad L_j(x) + rho H_{L_j}(x) T N(T M d_j))`` for one batch: the update ``G`` of
    :meth:`Variant.gradient` linearized in ``rho`` (``L_j`` the micro-batch mean or the descent-weighted
    sum); each term is one ``jax.jvp`` of ``grad L_j`` (DESIGN §3.1).

    ``centred``: return ``G - g_batch`` (``g_batch`` the batch's plain mean gradient), the Monte Carlo part of
    the drift once its exact mean ``E[g_batch] = g`` is split off (:func:`_mean_over_batches`). Without descent
    weights this is ``(rho/k) sum_j H_j N(.)`` and the micro-batch gradients are never formed."""
    if not variant.perturbs:
        g = problem.batch_grad(params, batch)
        return jax.tree_util.tree_map(jnp.zeros_like, g) if centred else g
    d, descent_weights, _, _ = variant.unit_perturbations(problem, params, state, batch, key)
    k = jax.tree_util.tree_leaves(d)[0].shape[0]
    B = jax.tree_util.tree_leaves(batch)[0].shape[0]
    micro = jax.tree_util.tree_map(lambda a: a.reshape(k, B // k, *a.shape[1:]), batch)

    def term(d_j, batch_j, w_j):
        def loss_fn(p):
            ell = problem.example_losses(p, batch_j)
            return jnp.mean(ell) if w_j is None else jnp.sum(w_j * ell)

        g, hv = jax.jvp(jax.grad(loss_fn), (params,), (d_j,))
        return jax.tree_util.tree_map(lambda a, b: a + variant.rho * b, g, hv)

    if descent_weights is None and centred:  # the mean of the micro-batch gradients is g_batch: only H_j N(.) left

        def hvp(d_j, batch_j):
            grad_j = jax.grad(lambda p: jnp.mean(problem.example_losses(p, batch_j)))
            return jax.tree_util.tree_map(lambda b: variant.rho * b, jax.jvp(grad_j, (params,), (d_j,))[1])

        return jax.tree_util.tree_map(lambda a: jnp.mean(a, axis=0), jax.vmap(hvp)(d, micro))
    if descent_weights is None:
        terms = jax.vmap(lambda dj, bj: term(dj, bj, None))(d, micro)
    else:
        terms = jax.vmap(term)(d, micro, descent_weights.astype(_dtype(params)))
    mean = jax.tree_util.tree_map(lambda a: jnp.mean(a, axis=0), terms)
    if centred:
        return jax.tree_util.tree_map(jnp.subtract, mean, problem.batch_grad(params, batch))
    return mean


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
        problem,
        variant,
        sampler,
        params,
        lambda st, batch, k, centred: linearized_update(problem, variant, params, st, batch, k, centred),
        key=key,
        num_samples=num_samples,
        max_enumeration=max_enumeration,
        return_stderr=return_stderr,
    )


# -- closed forms ---------------------------------------------------------------------------------------------


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
    dist = batch_distribution(
        sampler.with_replacement,
        n,
        micro_batch_size,
        key=key,
        num_samples=num_samples,
        max_enumeration=max_enumeration,
        dtype=_dtype(params),
    )
    value, per = expected_norm(problem, params, dist, freeze_mask(mask))
    if dist.exact:
        return value, jnp.zeros_like(value)
    return value, jnp.std(per, ddof=1) / jnp.sqrt(per.shape[0])


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
    """Drift by the closed forms of DESIGN §3.1 (:func:`~sde_sam.sde.closed_form_of` of the rule; ``P`` the SAM-ON
    mask, identity without one):

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
    b = closed_form_of(
        variant.rule,
        variant,
        problem,
        sampler,
        params,
        key=key,
        num_samples=num_samples,
        max_enumeration=max_enumeration,
    )
    if b is None:
        raise ValueError(
            f"`drift`='closed_form' is not available for variant {variant.name!r} (no formula for its rule "
            f"{type(variant.rule).__name__}, normalization and preconditioner); use drift='general' or 'expected'"
        )
    return b


# -- second-order SME correction ------------------------------------------------------------------------------


def second_order(drift_fn, params: Params, eta: float | Array) -> Params:
    """``b + (eta/2) (Db) b`` (DESIGN §3.3): one ``jax.jvp`` of the drift along itself."""
    b, db_b = jax.jvp(drift_fn, (params,), (drift_fn(params),))
    return jax.tree_util.tree_map(lambda a, c: a + 0.5 * eta * c, b, db_b)


# -- the drift as a choice of the model (DESIGN §3.4) ---------------------------------------------------------

#: Default target of a sized Monte Carlo drift: its standard error over ``||b(x0)||``.
DRIFT_RTOL = 0.01
#: Batches of the pilot that sizes a Monte Carlo drift, and the most it is given.
PILOT_SAMPLES = 256
MAX_SAMPLES = 16384


@dataclasses.dataclass(frozen=True)
class AbstractDrift(abc.ABC):
    """The drift ``b(x)`` of an SDE model (DESIGN §3.1, §3.4): one family member per way of computing it.

    A drift is called as ``drift(problem, variant, sampler, params, key=None, return_stderr=False)``; its
    batch expectation is exact by enumeration when the support has at most ``max_enumeration`` batches (or the
    update is linear in the batch), else a Monte Carlo mean over ``num_samples`` batches. ``num_samples=None``
    sizes that mean when the model is built (:meth:`sized`): the standard error at ``problem.init_params`` is
    ``rtol`` of ``||b(x0)||``. :meth:`supports` says whether the drift is defined for a variant.

    Arguments:
        num_samples: Monte Carlo batches (at least 2), or ``None`` to size them by ``rtol``.
        rtol: target relative standard error of a sized Monte Carlo drift (default 1 %).
        max_enumeration: largest batch support that is enumerated exactly.
    """

    num_samples: int | None = None
    rtol: float | None = DRIFT_RTOL
    max_enumeration: int = MAX_ENUMERATION

    #: The name in a result's configuration (and the string alias of :func:`sde_sam.sde_model`).
    name: ClassVar[str]

    def __post_init__(self):
        if self.num_samples is not None:
            check_positive("num_samples", self.num_samples, integer=True)
            object.__setattr__(self, "num_samples", check_spread("num_samples", self.num_samples))
        elif self.rtol is None:
            raise ValueError("give `num_samples` or `rtol` (the target that sizes the Monte Carlo drift)")
        if self.rtol is not None:
            check_positive("rtol", self.rtol)
            object.__setattr__(self, "rtol", float(self.rtol))
        check_positive("max_enumeration", self.max_enumeration, integer=True)
        object.__setattr__(self, "max_enumeration", int(self.max_enumeration))

    def supports(self, variant: Variant) -> bool:
        """Whether this drift is defined for ``variant``."""
        return True

    @abc.abstractmethod
    def __call__(
        self,
        problem: Problem,
        variant: Variant,
        sampler: Sampler,
        params: Params,
        key: PRNGKeyArray | None = None,
        *,
        return_stderr: bool = False,
    ) -> Params | tuple[Params, Params]:
        """``b(x)`` (with ``return_stderr``, also its leafwise Monte Carlo standard error)."""

    #: The estimator whose spread sizes the Monte Carlo mean: the general first-order rule by default (its
    #: control-variate form is the one the closed forms share).
    _pilot_estimator = staticmethod(general_drift)

    def _pilot(self, problem, variant, sampler, params, key, num_samples) -> tuple[Params, Params]:
        return self._pilot_estimator(
            problem,
            variant,
            sampler,
            params,
            key=key,
            num_samples=num_samples,
            max_enumeration=self.max_enumeration,
            return_stderr=True,
        )  # pyright: ignore[reportReturnType]

    def sized(self, problem: Problem, variant: Variant, sampler: Sampler) -> tuple[AbstractDrift, float | None]:
        """``(drift, predicted relative stderr)`` with ``num_samples`` fixed.

        Given ``num_samples``: the drift itself (``rtol`` dropped, it sized nothing) and ``None``. Exact drift:
        ``num_samples`` = 256 (unused) and ``None``. Otherwise a pilot of :data:`PILOT_SAMPLES` batches (fixed key
        ``jr.key(0)``) at ``problem.init_params`` estimates the standard error ``s`` of the drift estimator; the
        size is ``N = PILOT * (||s|| / (rtol ||b||))^2`` rounded up to a multiple of 64 and clipped to
        [64, 16384] (``||s||`` the root sum of squares of the leafwise errors). The target holds at the start;
        along a path the spread changes with ``x``."""
        if self.num_samples is not None:
            return dataclasses.replace(self, rtol=None), None
        assert self.rtol is not None  # __post_init__
        if drift_is_exact(problem, variant, sampler, self.max_enumeration):
            return dataclasses.replace(self, num_samples=NUM_SAMPLES), None
        b, err = self._pilot(problem, variant, sampler, problem.init_params, jr.key(0), PILOT_SAMPLES)
        b_norm = math.sqrt(float(tree_norm_sq(b)))
        err_norm = math.sqrt(float(tree_norm_sq(err)))
        if not (math.isfinite(b_norm) and math.isfinite(err_norm)) or b_norm == 0.0:
            # no relative target at a stationary (or broken) start: the most samples
            return dataclasses.replace(self, num_samples=MAX_SAMPLES), None
        need = PILOT_SAMPLES * (err_norm / (self.rtol * b_norm)) ** 2
        size = int(min(MAX_SAMPLES, max(CHUNK, CHUNK * math.ceil(need / CHUNK))))
        return dataclasses.replace(self, num_samples=size), err_norm / b_norm * math.sqrt(PILOT_SAMPLES / size)

    def _options(self) -> dict:
        return {"num_samples": self.num_samples or NUM_SAMPLES, "max_enumeration": self.max_enumeration}


@dataclasses.dataclass(frozen=True)
class GeneralDrift(AbstractDrift):
    """The general first-order rule ``b = E[(1/k) sum_j (g_{gamma_j} + rho H_{gamma_j} N(M d_j))]``
    (DESIGN §3.1; :func:`general_drift`). Defined for every variant."""

    name: ClassVar[str] = "general"

    def __call__(self, problem, variant, sampler, params, key=None, *, return_stderr=False):
        return general_drift(problem, variant, sampler, params, key=key, return_stderr=return_stderr, **self._options())


@dataclasses.dataclass(frozen=True)
class ClosedFormDrift(AbstractDrift):
    """The formulas of DESIGN §3.1 (:func:`closed_form_drift`): cheaper for large problems (USAM and m-USAM need no
    expectation). Defined where the variant's rule has a formula."""

    name: ClassVar[str] = "closed_form"

    def supports(self, variant):
        return (not variant.perturbs) or has_closed_form(variant.rule, variant)

    def __call__(self, problem, variant, sampler, params, key=None, *, return_stderr=False):
        if return_stderr:
            raise ValueError("the closed-form drift reports no standard error; use GeneralDrift() for it")
        return closed_form_drift(problem, variant, sampler, params, key=key, **self._options())


@dataclasses.dataclass(frozen=True)
class ExpectedDrift(AbstractDrift):
    """The mean step ``b = E_xi[G(x; xi)]`` with no expansion in ``rho`` (DESIGN §3.4; :func:`expected_drift`);
    with :class:`~sde_sam.sde.EmpiricalDiffusion` the moment-matching SME that SVAG converges to. Defined for
    every variant."""

    name: ClassVar[str] = "expected"

    _pilot_estimator = staticmethod(expected_drift)

    def __call__(self, problem, variant, sampler, params, key=None, *, return_stderr=False):
        return expected_drift(
            problem, variant, sampler, params, key=key, return_stderr=return_stderr, **self._options()
        )


#: The drifts by name: the string aliases of :func:`sde_sam.sde_model` (``drift="expected"``).
DRIFT_CLASSES: dict[str, type[AbstractDrift]] = {
    cls.name: cls for cls in (GeneralDrift, ClosedFormDrift, ExpectedDrift)
}


def as_drift(drift: AbstractDrift | str, **options) -> AbstractDrift:
    """``drift`` as an :class:`AbstractDrift`: an object as it is (no ``options``), a name (``"general"``,
    ``"closed_form"``, ``"expected"``) as its class built with ``options``."""
    examples = "GeneralDrift(), ExpectedDrift(), ..."
    return as_choice(drift, AbstractDrift, DRIFT_CLASSES, "drift", examples, only_taken=False, **options)
