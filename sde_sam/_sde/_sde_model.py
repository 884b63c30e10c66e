"""The SDE model of a variant: ``dX = -b(X) dt + sqrt(eta) S(X)^{1/2} dW`` (DESIGN §3)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.random as jr
from jax.typing import DTypeLike
from jaxtyping import PRNGKeyArray, PyTree

from .._problems._problem import Problem, tree_norm_sq
from .._problems._sampler import Sampler
from .._training._momentum import Momentum, as_momentum
from .._training._runner import check_positive
from .._variants._variant import Variant
from . import _diffusion, _drift
from ._batches import CHUNK, MAX_ENUMERATION, NUM_SAMPLES

DRIFTS = ("general", "closed_form", "expected")
#: Default target of a sized Monte Carlo drift: its standard error over ``||b(x0)||``.
DRIFT_RTOL = 0.01
#: Batches of the pilot that sizes a Monte Carlo drift, and the most it is given.
PILOT_SAMPLES = 256
MAX_SAMPLES = 16384

Params = PyTree


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass(frozen=True)
class SDEModel:
    """``dX = -b(X) dt + sqrt(eta) S(X)^{1/2} dW`` for ``variant`` on ``problem`` with batches from ``sampler``.

    Build it with :func:`sde_model`. The model is a pytree whose only leaves are the problem's arrays (so it
    can be passed through ``jax.jit``); everything else is static configuration.

    * :meth:`drift` ``(params, key=None) -> b(x)`` (DESIGN §3.1; with ``order=2`` the second-order SME drift
      ``b + (eta/2)(Db) b``, DESIGN §3.3). ``key`` is only used by Monte Carlo expectations; ``None`` means
      the fixed ``jr.key(0)``.
    * :meth:`diffusion_sample` ``(params, key) -> S^{1/2} z`` (DESIGN §3.2), matrix-free.
    """

    problem: Problem
    variant: Variant
    sampler: Sampler
    eta: float
    diffusion: str = "leading"
    order: int = 1
    drift_kind: str = "general"
    num_samples: int = NUM_SAMPLES
    max_enumeration: int = MAX_ENUMERATION
    diffusion_samples: int = NUM_SAMPLES
    drift_rtol: float | None = None
    drift_rel_stderr: float | None = None
    momentum: Momentum | None = None

    def tree_flatten(self):
        aux = tuple(getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "problem")
        return (self.problem,), aux

    @classmethod
    def tree_unflatten(cls, aux, children):
        names = [f.name for f in dataclasses.fields(cls) if f.name != "problem"]
        obj = object.__new__(cls)
        object.__setattr__(obj, "problem", children[0])
        for name, value in zip(names, aux, strict=True):
            object.__setattr__(obj, name, value)
        return obj

    # -- the two coefficients ------------------------------------------------------------------------
    def first_order_drift(self, params: Params, key: PRNGKeyArray | None = None) -> Params:
        """``b(x)`` to first order in ``eta`` (DESIGN §3.1): first order in ``rho`` (``"general"``, ``"closed_form"``)
        or exact in ``rho`` (``"expected"``, the mean step ``E_xi[G]``)."""
        fn = _DRIFT_FNS[self.drift_kind]
        return fn(
            self.problem,
            self.variant,
            self.sampler,
            params,
            key=key,
            num_samples=self.num_samples,
            max_enumeration=self.max_enumeration,
        )

    def drift(self, params: Params, key: PRNGKeyArray | None = None) -> Params:
        """``b(x)``, or ``b + (eta/2)(Db) b`` when ``order == 2`` (DESIGN §3.3)."""
        if self.order == 1:
            return self.first_order_drift(params, key)
        return _drift.second_order(lambda p: self.first_order_drift(p, key), params, self.eta)

    def diffusion_sample(self, params: Params, key: PRNGKeyArray) -> Params:
        """One draw of ``S(x)^{1/2} z``, ``z ~ N(0, I)`` (DESIGN §3.2; see :mod:`sde_sam._sde._diffusion`)."""
        if self.diffusion == "leading":
            return _diffusion.leading_sample(
                self.problem,
                self.sampler,
                params,
                key,
                self.variant,
                num_samples=self.diffusion_samples,
                max_enumeration=self.max_enumeration,
            )
        if self.diffusion == "first_order":
            return _diffusion.first_order_sample(self.problem, self.variant, self.sampler, params, key)
        if self.diffusion == "empirical":
            return _diffusion.empirical_sample(
                self.problem,
                self.variant,
                self.sampler,
                params,
                key,
                num_samples=self.diffusion_samples,
                max_enumeration=self.max_enumeration,
            )
        return _diffusion.zero_sample(params)

    @property
    def noise_factor(self) -> float:
        """``c(B)`` of the sampler at its batch size."""
        return self.sampler.factor(self.sampler.batch_size, self.problem.num_examples)

    def replace(self, **changes) -> SDEModel:
        """A copy with some fields changed (validated again through :func:`sde_model`)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if self.drift_rtol is not None:  # a sized Monte Carlo drift is sized again for the changed model
            fields["num_samples"] = None
        if self.momentum is not None:  # eta is stored rescaled: hand back the method's own step
            fields["eta"] = self.eta / self.momentum.time_scale
        fields.update(changes)
        fields.pop("drift_rel_stderr")
        drift = fields.pop("drift_kind")
        return sde_model(fields.pop("problem"), fields.pop("variant"), fields.pop("sampler"), drift=drift, **fields)


def sde_model(
    problem: Problem,
    variant: Variant,
    sampler: Sampler,
    eta: float = 0.05,
    diffusion: str = "leading",
    order: int = 1,
    drift: str = "general",
    *,
    num_samples: int | None = None,
    max_enumeration: int = MAX_ENUMERATION,
    drift_rtol: float | None = DRIFT_RTOL,
    diffusion_samples: int | None = None,
    momentum: Momentum | float | None = None,
    dtype: DTypeLike | None = None,
) -> SDEModel:
    """The SDE ``dX = -b(X) dt + sqrt(eta) S(X)^{1/2} dW`` of ``variant`` (DESIGN §3).

    Arguments:
        eta: learning rate of the modelled discrete method (one step = ``eta`` units of SDE time).
        diffusion: ``"leading"`` (``Cov[G_0]`` of the rho-free update: ``c(B) Sigma``, or ``Cov[sum_i w_i g_i]`` for
            RW-SAM with weights in the descent), ``"first_order"`` (``+ rho(H Sigma + Sigma H)``, unnormalized
            batch rule), ``"empirical"`` (``Cov_xi[G]`` of the perturbed update) or ``"none"``.
        order: ``1`` (first-order SME) or ``2`` (drift ``b + (eta/2)(Db) b``; not with ``momentum``).
        drift: ``"general"`` (the general first-order rule), ``"closed_form"`` (DESIGN §3.1 formulas;
            cheaper for large problems: USAM/m-USAM need no expectation), or ``"expected"`` (the mean step
            ``E_xi[G]`` with no expansion in ``rho``; with ``diffusion="empirical"`` the moment-matching SME).
        num_samples: Monte Carlo size of the drift's batch expectation when it is not enumerated. ``None``
            (default): sized by :func:`monte_carlo_size` so that the drift's standard error at
            ``problem.init_params`` is ``drift_rtol`` of its norm (64 to 16,384 batches; unused when exact).
        max_enumeration: largest batch support that is enumerated exactly.
        drift_rtol: target standard error of a sized Monte Carlo drift relative to ``||b(x0)||`` (default 1 %).
        diffusion_samples: Monte Carlo size of the ``"empirical"`` diffusion and of RW-SAM's ``"leading"`` one
            (default ``num_samples`` when that is given, else 256).
        momentum: the method runs with heavy-ball or Nesterov momentum ``beta`` (:class:`~sde_sam.Momentum`, or a
            number): the model is the rescaled-learning-rate SDE, that of the plain method with step
            ``eta / (1 - beta)`` (Li, Tai & E), whose time ``t = k eta / (1 - beta)`` is ``Runs.times`` of
            ``run_discrete(..., momentum=...)``. ``model.eta`` is the rescaled step.
        dtype: ``float32`` or ``float64`` (with ``jax_enable_x64``): the problem is cast to it, as
            :func:`sde_sam.run_discrete` does; ``None`` keeps the problem's own dtype.
    """
    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be a sde_sam.Problem, got {type(problem).__name__}")
    if not isinstance(variant, Variant):
        raise TypeError(f"`variant` must be a sde_sam.variants.Variant, got {type(variant).__name__}")
    if dtype is not None:
        problem = problem.with_dtype(dtype)
    _drift._check(problem, variant, sampler)
    check_positive("eta", eta)
    momentum = as_momentum(momentum)
    if momentum is not None:
        eta = eta * momentum.time_scale
    if diffusion not in _diffusion.DIFFUSIONS:
        raise ValueError(f"`diffusion` must be one of {_diffusion.DIFFUSIONS}, got {diffusion!r}")
    if drift not in DRIFTS:
        raise ValueError(f"`drift` must be one of {DRIFTS}, got {drift!r}")
    if isinstance(order, bool) or order not in (1, 2):
        raise ValueError(f"`order` must be 1 or 2, got {order!r}")
    for name, value in (("num_samples", num_samples), ("diffusion_samples", diffusion_samples)):
        if value is not None:
            check_positive(name, value, integer=True)
            if value < 2:
                raise ValueError(f"`{name}` must be at least 2 (one Monte Carlo batch has no spread), got {value}")
    check_positive("max_enumeration", max_enumeration, integer=True)
    if num_samples is None and drift_rtol is None:
        raise ValueError("give `num_samples` or `drift_rtol` (the target that sizes the Monte Carlo drift)")
    if drift_rtol is not None and num_samples is None:
        check_positive("drift_rtol", drift_rtol)
    if order == 2 and momentum is not None:
        raise ValueError(
            "`order`=2 with `momentum`: the rescaled-learning-rate model is first order (the second-order "
            "correction of a momentum method is not the plain method's `(eta/2)(Db) b`); use order=1"
        )
    if order == 2 and not variant.differentiable_update:
        raise ValueError(
            f"`order`=2 needs the derivative of the drift, which is not defined for variant {variant.name!r} "
            f"(its weights carry stop_gradient); use order=1"
        )
    if diffusion == "first_order" and not _diffusion.first_order_supported(variant):
        raise ValueError(
            f"`diffusion`='first_order' is defined for SGD, n-USAM/n-SAM, random-direction SAM and the batch rule "
            f"under a linear normalization (USAM, m-USAM, USAM-ON, DNSAM); variant {variant.name!r} needs "
            f"diffusion='empirical' "
            f"or 'leading'"
        )
    diffusion_samples = diffusion_samples or num_samples or NUM_SAMPLES
    rtol, rel = None, None
    if num_samples is None:
        assert drift_rtol is not None  # checked above
        rtol = float(drift_rtol)
        num_samples, rel = monte_carlo_size(problem, variant, sampler, drift, max_enumeration, rtol)
    return SDEModel(
        problem,
        variant,
        sampler,
        float(eta),
        diffusion,
        int(order),
        drift,
        int(num_samples),
        int(max_enumeration),
        int(diffusion_samples),
        rtol,
        rel,
        momentum,
    )


def monte_carlo_size(
    problem: Problem, variant: Variant, sampler: Sampler, drift: str, max_enumeration: int, rtol: float
) -> tuple[int, float | None]:
    """``(num_samples, predicted relative stderr)`` of a Monte Carlo drift sized to ``rtol``; ``(256, None)``
    when the drift is exact (no Monte Carlo to size).

    A pilot of :data:`PILOT_SAMPLES` batches (fixed key ``jr.key(0)``) at ``problem.init_params`` estimates
    the standard error ``s`` of the drift estimator (the ``"expected"`` mean step, else the general
    first-order rule, whose control-variate form the closed forms share); the size is
    ``N = PILOT * (||s|| / (rtol ||b||))^2`` rounded up to a multiple of 64 and clipped to [64, 16384]
    (``||s||`` the root sum of squares of the leafwise errors). The target holds at the start; along a
    path the spread changes with ``x`` (the recorded estimate is the start's)."""
    if _drift.drift_is_exact(problem, variant, sampler, max_enumeration):
        return NUM_SAMPLES, None
    fn = _drift.expected_drift if drift == "expected" else _drift.general_drift
    b, err = fn(
        problem,
        variant,
        sampler,
        problem.init_params,
        key=jr.key(0),
        num_samples=PILOT_SAMPLES,
        max_enumeration=max_enumeration,
        return_stderr=True,
    )
    b_norm = math.sqrt(float(tree_norm_sq(b)))
    err_norm = math.sqrt(float(tree_norm_sq(err)))
    if not (math.isfinite(b_norm) and math.isfinite(err_norm)) or b_norm == 0.0:
        return MAX_SAMPLES, None  # no relative target at a stationary (or broken) start: the most samples
    need = PILOT_SAMPLES * (err_norm / (rtol * b_norm)) ** 2
    size = int(min(MAX_SAMPLES, max(CHUNK, CHUNK * math.ceil(need / CHUNK))))
    return size, err_norm / b_norm * math.sqrt(PILOT_SAMPLES / size)


_DRIFT_FNS = {
    "general": _drift.general_drift,
    "closed_form": _drift.closed_form_drift,
    "expected": _drift.expected_drift,
}


def step_keys(path_key: PRNGKeyArray, step) -> tuple[PRNGKeyArray, PRNGKeyArray]:
    """``(drift_key, noise_key)`` of step ``step`` of a path: ``jr.split(jr.fold_in(path_key, step))``."""
    k = jr.split(jr.fold_in(path_key, step))
    return k[0], k[1]
