"""The SDE model of a variant: ``dX = -b(X) dt + sqrt(eta) S(X)^{1/2} dW`` (DESIGN §3)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
from jax.typing import DTypeLike
from jaxtyping import PRNGKeyArray, PyTree

from .._checks import check_positive
from .._problems._problem import Problem
from .._problems._sampler import Sampler
from .._training._momentum import Momentum, as_momentum
from .._training._runner import traced_hyperparameters
from .._variants._variant import Variant
from . import _drift
from ._batches import MAX_ENUMERATION, NUM_SAMPLES, check_spread
from ._diffusion import AbstractDiffusion, as_diffusion
from ._drift import (
    DRIFT_CLASSES,
    DRIFT_RTOL,
    AbstractDrift,
    as_drift,
)
from ._drift import (
    MAX_SAMPLES as MAX_SAMPLES,
)
from ._drift import (
    PILOT_SAMPLES as PILOT_SAMPLES,
)

#: The string aliases of the drifts (``drift="expected"``), in the order of the ladder.
DRIFTS = tuple(DRIFT_CLASSES)

Params = PyTree


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=["problem", "variant", "eta"],
    meta_fields=["sampler", "diffusion", "order", "drift_kind", "drift_rel_stderr", "momentum"],
)
@dataclasses.dataclass(frozen=True)
class SDEModel:
    """``dX = -b(X) dt + sqrt(eta) S(X)^{1/2} dW`` for ``variant`` on ``problem`` with batches from ``sampler``.

    Build it with :func:`sde_model`. The model is a pytree whose leaves are the problem's arrays, ``eta`` and the
    variant's ``rho`` (so it can be passed through ``jax.jit``, and a compiled simulation serves every ``eta`` and
    ``rho``); everything
    else is static configuration: the drift ``drift_kind``
    (an :class:`~sde_sam.sde.AbstractDrift` with its Monte Carlo size fixed) and the ``diffusion``
    (an :class:`~sde_sam.sde.AbstractDiffusion`).

    * :meth:`drift` ``(params, key=None) -> b(x)`` (DESIGN §3.1; with ``order=2`` the second-order SME drift
      ``b + (eta/2)(Db) b``, DESIGN §3.3). ``key`` is only used by Monte Carlo expectations; ``None`` means
      the fixed ``jr.key(0)``.
    * :meth:`diffusion_sample` ``(params, key) -> S^{1/2} z`` (DESIGN §3.2), matrix-free.
    """

    problem: Problem
    variant: Variant
    sampler: Sampler
    eta: Any  # a float; inside JAX transformations an array (traced) or a placeholder
    diffusion: AbstractDiffusion
    order: int
    drift_kind: AbstractDrift
    drift_rel_stderr: float | None = None
    momentum: Momentum | None = None

    # -- the two coefficients ------------------------------------------------------------------------
    def first_order_drift(self, params: Params, key: PRNGKeyArray | None = None) -> Params:
        """``b(x)`` to first order in ``eta`` (DESIGN §3.1): first order in ``rho`` (:class:`GeneralDrift`,
        :class:`ClosedFormDrift`) or exact in ``rho`` (:class:`ExpectedDrift`, the mean step ``E_xi[G]``)."""
        return self.drift_kind(self.problem, self.variant, self.sampler, params, key)

    def drift(self, params: Params, key: PRNGKeyArray | None = None) -> Params:
        """``b(x)``, or ``b + (eta/2)(Db) b`` when ``order == 2`` (DESIGN §3.3)."""
        if self.order == 1:
            return self.first_order_drift(params, key)
        return _drift.second_order(lambda p: self.first_order_drift(p, key), params, self.eta)

    def diffusion_sample(self, params: Params, key: PRNGKeyArray) -> Params:
        """One draw of ``S(x)^{1/2} z``, ``z ~ N(0, I)`` (DESIGN §3.2; see :mod:`sde_sam._sde._diffusion`)."""
        return self.diffusion(self.problem, self.variant, self.sampler, params, key)

    # -- the drift's Monte Carlo options, read from ``drift_kind`` --------------------------------------
    @property
    def num_samples(self) -> int:
        """Monte Carlo batches of the drift's expectation (unused where it is exact)."""
        assert self.drift_kind.num_samples is not None  # sized by sde_model
        return self.drift_kind.num_samples

    @property
    def drift_rtol(self) -> float | None:
        """The target that sized ``num_samples``; ``None`` where ``num_samples`` was given."""
        return self.drift_kind.rtol

    @property
    def max_enumeration(self) -> int:
        return self.drift_kind.max_enumeration

    @property
    def diffusion_samples(self) -> int | None:
        """Monte Carlo batches of a sampled diffusion; ``None`` for one that samples no batches."""
        return getattr(self.diffusion, "num_samples", None)

    def traced(self) -> SDEModel:
        """The model with ``eta`` and the variant's hyperparameters as arrays of the parameters' dtype, so that a
        compiled simulation takes them as traced values (:func:`~sde_sam._training._runner.traced_hyperparameters`)."""
        dtype = jax.tree_util.tree_leaves(self.problem.init_params)[0].dtype
        return dataclasses.replace(
            self, variant=traced_hyperparameters(self.variant, dtype), eta=jnp.asarray(self.eta, dtype)
        )

    @property
    def noise_factor(self) -> float:
        """``c(B)`` of the sampler at its batch size."""
        return self.sampler.factor(self.sampler.batch_size, self.problem.num_examples)

    def replace(self, **changes) -> SDEModel:
        """A copy with some fields changed (validated again through :func:`sde_model`; ``drift`` and
        ``diffusion`` as there). A drift sized by its ``rtol`` is sized again for the changed model. The flat
        options of :func:`sde_model` change the model's own drift and diffusion (``num_samples``, ``drift_rtol``,
        ``max_enumeration``; ``diffusion_samples``) unless ``drift`` or ``diffusion`` is given anew."""
        drift = self.drift_kind
        if drift.rtol is not None:
            drift = dataclasses.replace(drift, num_samples=None)
        diffusion = self.diffusion
        if "drift" not in changes:
            own = {"num_samples": "num_samples", "drift_rtol": "rtol", "max_enumeration": "max_enumeration"}
            options = {own[k]: changes.pop(k) for k in list(changes) if k in own}
            if "max_enumeration" in options and "diffusion" not in changes and hasattr(diffusion, "max_enumeration"):
                diffusion = dataclasses.replace(diffusion, max_enumeration=options["max_enumeration"])
            drift = dataclasses.replace(drift, **options) if options else drift
        if "diffusion" not in changes and "diffusion_samples" in changes:
            diffusion = dataclasses.replace(diffusion, num_samples=changes.pop("diffusion_samples"))
        fields = {
            "eta": self.eta / self.momentum.time_scale if self.momentum is not None else self.eta,
            "diffusion": diffusion,
            "order": self.order,
            "drift": drift,
            "momentum": self.momentum,
        }
        fields.update(changes)
        return sde_model(
            fields.pop("problem", self.problem),
            fields.pop("variant", self.variant),
            fields.pop("sampler", self.sampler),
            **fields,
        )


def _resolve_drift(drift, num_samples, max_enumeration, drift_rtol) -> AbstractDrift:
    """The drift object of :func:`sde_model`'s ``drift`` argument: an object as it is, or a name built with the
    flat options (the same drift as the object with those options)."""
    if isinstance(drift, AbstractDrift):
        if num_samples is not None or max_enumeration is not None or drift_rtol is not _DEFAULT:
            raise TypeError(
                "`num_samples`, `max_enumeration` and `drift_rtol` are options of a drift given by name; with a "
                f"drift object give them to it: {type(drift).__name__}(num_samples=..., rtol=..., max_enumeration=...)"
            )
        return drift
    as_drift(drift)  # a clear error for a bad name, before the options are checked
    rtol = DRIFT_RTOL if drift_rtol is _DEFAULT else drift_rtol
    if num_samples is None and rtol is None:
        raise ValueError("give `num_samples` or `drift_rtol` (the target that sizes the Monte Carlo drift)")
    if num_samples is None:
        check_positive("drift_rtol", rtol)
    return as_drift(drift, num_samples=num_samples, rtol=rtol, max_enumeration=max_enumeration or MAX_ENUMERATION)


def _resolve_diffusion(diffusion, num_samples, max_enumeration, diffusion_samples) -> AbstractDiffusion:
    """The diffusion object of :func:`sde_model`'s ``diffusion`` argument: an object as it is, or a name built
    with the flat options (``diffusion_samples``, else ``num_samples``, else 256)."""
    if isinstance(diffusion, AbstractDiffusion):
        if diffusion_samples is not None:
            raise TypeError(
                "`diffusion_samples` is an option of a diffusion given by name; with a diffusion object give it "
                f"to it: {type(diffusion).__name__}(num_samples=...)"
            )
        return diffusion
    return as_diffusion(
        diffusion,
        num_samples=diffusion_samples or num_samples or NUM_SAMPLES,
        max_enumeration=max_enumeration or MAX_ENUMERATION,
    )


class _Default:
    def __repr__(self):
        return f"DRIFT_RTOL ({DRIFT_RTOL})"


_DEFAULT: Any = _Default()


def sde_model(
    problem: Problem,
    variant: Variant,
    sampler: Sampler,
    eta: float = 0.05,
    diffusion: AbstractDiffusion | str = "leading",
    order: int = 1,
    drift: AbstractDrift | str = "general",
    *,
    num_samples: int | None = None,
    max_enumeration: int | None = None,
    drift_rtol: float | None = _DEFAULT,
    diffusion_samples: int | None = None,
    momentum: Momentum | float | None = None,
    dtype: DTypeLike | None = None,
) -> SDEModel:
    """The SDE ``dX = -b(X) dt + sqrt(eta) S(X)^{1/2} dW`` of ``variant`` (DESIGN §3).

    Arguments:
        eta: learning rate of the modelled discrete method (one step = ``eta`` units of SDE time).
        diffusion: an :class:`~sde_sam.sde.AbstractDiffusion`: :class:`~sde_sam.sde.LeadingDiffusion` (default;
            ``Cov[G_0]`` of the rho-free update: ``c(B) Sigma``, or ``Cov[sum_i w_i g_i]`` for RW-SAM with weights
            in the descent), :class:`~sde_sam.sde.FirstOrderDiffusion` (``+ rho(H Sigma + Sigma H)``, unnormalized
            batch rule), :class:`~sde_sam.sde.EmpiricalDiffusion` (``Cov_xi[G]`` of the perturbed update) or
            :class:`~sde_sam.sde.NoDiffusion`; or its name (``"leading"``, ``"first_order"``, ``"empirical"``,
            ``"none"``), built with ``diffusion_samples`` and ``max_enumeration``.
        order: ``1`` (first-order SME) or ``2`` (drift ``b + (eta/2)(Db) b``; not with ``momentum``).
        drift: an :class:`~sde_sam.sde.AbstractDrift`: :class:`~sde_sam.sde.GeneralDrift` (default; the general
            first-order rule), :class:`~sde_sam.sde.ClosedFormDrift` (DESIGN §3.1 formulas; cheaper for large
            problems: USAM/m-USAM need no expectation) or :class:`~sde_sam.sde.ExpectedDrift` (the mean step
            ``E_xi[G]`` with no expansion in ``rho``; with the empirical diffusion the moment-matching SME); or
            its name (``"general"``, ``"closed_form"``, ``"expected"``), built with ``num_samples``,
            ``drift_rtol`` and ``max_enumeration``. A drift with ``num_samples=None`` is sized here
            (:meth:`AbstractDrift.sized`: 64 to 16,384 batches so that its standard error at
            ``problem.init_params`` is ``rtol`` of its norm; unused when exact).
        num_samples: with a drift by name, its Monte Carlo size (``None``: sized by ``drift_rtol``).
        max_enumeration: with a drift or diffusion by name, the largest batch support enumerated exactly (4096).
        drift_rtol: with a drift by name, the target of a sized Monte Carlo drift (default 1 %).
        diffusion_samples: with a diffusion by name, the Monte Carlo size of the empirical diffusion and of
            RW-SAM's leading one (default ``num_samples`` when that is given, else 256).
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
    for name, value in (("num_samples", num_samples), ("diffusion_samples", diffusion_samples)):
        if value is not None:
            check_positive(name, value, integer=True)
            check_spread(name, value)
    if max_enumeration is not None:
        check_positive("max_enumeration", max_enumeration, integer=True)
    diffusion_obj = _resolve_diffusion(diffusion, num_samples, max_enumeration, diffusion_samples)
    drift_obj = _resolve_drift(drift, num_samples, max_enumeration, drift_rtol)
    if isinstance(order, bool) or order not in (1, 2):
        raise ValueError(f"`order` must be 1 or 2, got {order!r}")
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
    if not diffusion_obj.supports(variant):
        raise ValueError(
            f"`diffusion`={diffusion_obj.name!r} ({diffusion_obj!r}) is not defined for variant {variant.name!r} "
            "(its `supports` says so: "
            "the first-order diffusion is defined for SGD, n-USAM/n-SAM, random-direction SAM and the batch rule "
            "under a linear normalization, USAM, m-USAM, USAM-ON, DNSAM); use EmpiricalDiffusion() or "
            "LeadingDiffusion()"
        )
    if not drift_obj.supports(variant):
        raise ValueError(
            f"`drift`={drift_obj.name!r} ({type(drift_obj).__name__}) is not defined for variant {variant.name!r} "
            "(no formula for its rule "
            f"{type(variant.rule).__name__}, normalization and preconditioner); use GeneralDrift() or ExpectedDrift()"
        )
    drift_obj, rel = drift_obj.sized(problem, variant, sampler)
    return SDEModel(problem, variant, sampler, float(eta), diffusion_obj, int(order), drift_obj, rel, momentum)


def monte_carlo_size(
    problem: Problem, variant: Variant, sampler: Sampler, drift: str, max_enumeration: int, rtol: float
) -> tuple[int, float | None]:
    """``(num_samples, predicted relative stderr)`` of the Monte Carlo drift named ``drift`` sized to ``rtol``
    (:meth:`AbstractDrift.sized`); ``(256, None)`` when the drift is exact (no Monte Carlo to size)."""
    sized, rel = DRIFT_CLASSES[drift](rtol=rtol, max_enumeration=max_enumeration).sized(problem, variant, sampler)
    assert sized.num_samples is not None
    return sized.num_samples, rel


def step_keys(path_key: PRNGKeyArray, step) -> tuple[PRNGKeyArray, PRNGKeyArray]:
    """``(drift_key, noise_key)`` of step ``step`` of a path: ``jr.split(jr.fold_in(path_key, step))``."""
    k = jr.split(jr.fold_in(path_key, step))
    return k[0], k[1]
