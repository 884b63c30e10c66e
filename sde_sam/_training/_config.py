"""What a recorded training depends on (DESIGN §6.3): :class:`TrainConfig`, its learning-rate :class:`Schedule`, and
the problem, variant, sampler, schedule and momentum it names."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import variants as _variants
from .._checks import Literal, check_integer
from .._problems import _builtin, _mnist1d, _networks
from .._problems._problem import Problem
from .._problems._sampler import UniformSubset, WithoutReplacement, WithReplacement
from .._variants._variant import Variant
from ._momentum import Momentum

OBSERVABLES = (
    "loss",
    "accuracy",
    "test_loss",
    "test_accuracy",
    "grad_norm_sq",
    "trace_sigma",
    "lambda_max",
    "trace_hessian",
    "batch_grad_norm",
    "distance",
    "effective_sample_size",
)
DEFAULT_OBSERVABLES = OBSERVABLES
PROBLEMS = ("digits_mlp", "digits_cnn", "mnist1d_mlp", "mnist1d_cnn")
#: The schedule kinds (``TrainConfig.schedule``).
ScheduleKind = Literal["constant", "cosine", "step"]
#: optax's schedule of each kind, from a :class:`Schedule`'s fields.
_OPTAX: dict[str, Callable[[Any], optax.Schedule]] = {
    "constant": lambda s: optax.constant_schedule(1.0),
    "cosine": lambda s: optax.cosine_decay_schedule(1.0, s.total_steps, alpha=s.final),
    "step": lambda s: optax.piecewise_constant_schedule(1.0, {int(m): float(s.gamma) for m in s.milestones}),
}
SCHEDULES = tuple(_OPTAX)
#: The samplers a config names (``TrainConfig.sampler``).
SAMPLERS = {
    "without_replacement": WithoutReplacement,
    "with_replacement": WithReplacement,
    "uniform_subset": UniformSubset,
}


# -- learning-rate schedules ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Learning-rate multiplier ``s(k)``: step ``k`` uses ``eta * s(k)``.

    ``constant``: ``1``; ``cosine``: ``final + (1 - final)(1 + cos(pi k / total_steps))/2``; ``step``:
    ``gamma ** (number of milestones <= k)``: optax's ``constant_schedule``, ``cosine_decay_schedule`` (``alpha =
    final``) and ``piecewise_constant_schedule``. Hashable, so it can be a static argument of a jitted runner.
    """

    kind: ScheduleKind = "constant"
    total_steps: int = 1
    final: float = 0.0
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"`schedule` kind must be one of {SCHEDULES}, got {self.kind!r}")
        check_integer("total_steps", self.total_steps)
        if not (isinstance(self.final, (int, float)) and 0 <= self.final <= 1):
            raise ValueError(f"`final` (cosine floor) must be in [0, 1], got {self.final!r}")
        if not (isinstance(self.gamma, (int, float)) and 0 < self.gamma <= 1):
            raise ValueError(f"`gamma` (step decay factor) must be in (0, 1], got {self.gamma!r}")
        ms = tuple(int(m) for m in self.milestones)
        if any(m < 1 for m in ms) or any(b <= a for a, b in itertools.pairwise(ms)):
            raise ValueError(f"`milestones` must be strictly increasing positive steps, got {self.milestones!r}")
        object.__setattr__(self, "milestones", ms)

    def __call__(self, k):
        return jnp.asarray(_OPTAX[self.kind](self)(jnp.asarray(k, jnp.float32)), jnp.float32)

    def values(self, steps) -> np.ndarray:
        """``s(k)`` at the given steps (numpy)."""
        return np.asarray(jax.vmap(self)(jnp.asarray(steps)))


# -- configuration -------------------------------------------------------------------------------------


def _freeze(d: Mapping | tuple | None) -> tuple:
    if d is None:
        return ()
    if isinstance(d, tuple):
        return d
    return tuple(sorted((str(k), tuple(v) if isinstance(v, list) else v) for k, v in dict(d).items()))


@dataclasses.dataclass(frozen=True)
class EstimatorSizes:
    """The sizes of the recorded observables' estimators, declared once for :class:`TrainConfig` and the estimators
    it builds: ``lanczos_matvecs`` (Hessian-vector products for ``lambda_max``), ``hutchinson_probes`` (``tr H``),
    ``norm_batches`` (micro-batches for ``E||g_m||``), ``minibatch_batches`` (batches for the BatchNorm
    ``tr Sigma``), ``chunk_size`` (examples per chunk of per-example gradients) and the estimators' fixed seed."""

    lanczos_matvecs: int = 20
    hutchinson_probes: int = 8
    norm_batches: int = 32
    minibatch_batches: int = 32
    chunk_size: int | None = 512
    estimator_seed: int = 12345

    def estimator_sizes(self) -> dict[str, Any]:
        """These sizes by name (to build another holder of them)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(EstimatorSizes)}


@dataclasses.dataclass(frozen=True)
class TrainConfig(EstimatorSizes):
    """Everything a recording depends on. ``problem_kwargs``/``variant_kwargs`` are dicts (stored as sorted
    tuples so the config is hashable); ``variant`` is a name for :func:`sde_sam.variants.get`. The estimator sizes
    are :class:`EstimatorSizes`'s. ``sampler``: a key of :data:`SAMPLERS` (shuffled epochs by default).
    """

    problem: str = "digits_mlp"
    problem_kwargs: Any = ()
    variant: str = "sgd"
    variant_kwargs: Any = ()
    label: str = ""
    batch_size: int = 64
    sampler: Literal["without_replacement", "with_replacement", "uniform_subset"] = "without_replacement"
    eta: float = 0.1
    steps: int = 200
    every: int = 50
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    schedule: ScheduleKind = "constant"
    schedule_kwargs: Any = ()
    observables: tuple[str, ...] = DEFAULT_OBSERVABLES
    #: heavy-ball momentum ``beta`` in [0, 1) on the variant's update (0: none); ``nesterov``: Nesterov's form
    #: (:class:`~sde_sam.Momentum`); the recorded times are then ``k eta / (1 - beta)``, the rescaled SDE's.
    momentum: float = 0.0
    nesterov: bool = False

    def __post_init__(self):
        object.__setattr__(self, "problem_kwargs", _freeze(self.problem_kwargs))
        object.__setattr__(self, "variant_kwargs", _freeze(self.variant_kwargs))
        object.__setattr__(self, "schedule_kwargs", _freeze(self.schedule_kwargs))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "observables", tuple(self.observables))
        if self.problem not in PROBLEMS:
            raise ValueError(f"`problem` must be one of {PROBLEMS}, got {self.problem!r}")
        if not self.seeds:
            raise ValueError("`seeds` must hold at least one integer seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"`seeds` must be distinct, got {self.seeds}")
        unknown = [o for o in self.observables if o not in OBSERVABLES]
        if unknown:
            raise ValueError(f"unknown observable(s) {unknown}; valid: {', '.join(OBSERVABLES)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {self.schedule!r}")
        for name in (
            "batch_size",
            "steps",
            "every",
            "lanczos_matvecs",
            "hutchinson_probes",
            "norm_batches",
            "minibatch_batches",
        ):
            check_integer(name, getattr(self, name))
        if self.hutchinson_probes < 2 or self.norm_batches < 2:
            raise ValueError("`hutchinson_probes` and `norm_batches` must be >= 2 (standard errors need two draws)")
        if not (isinstance(self.eta, (int, float)) and math.isfinite(self.eta) and self.eta > 0):
            raise ValueError(f"`eta` must be a finite number in (0, inf), got {self.eta!r}")
        if self.steps % self.every:
            raise ValueError(f"`steps`={self.steps} must be a multiple of `every`={self.every}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"`sampler` must be one of {tuple(SAMPLERS)}, got {self.sampler!r}")
        Momentum(self.momentum, self.nesterov)  # validates beta in [0, 1) and nesterov a bool
        if self.nesterov and not self.momentum:
            raise ValueError("`nesterov=True` needs `momentum` > 0 (Nesterov's form of a momentum beta)")

    @property
    def name(self) -> str:
        return self.label or self.variant

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("problem_kwargs", "variant_kwargs", "schedule_kwargs"):
            d[k] = dict(getattr(self, k))
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> TrainConfig:
        d = dict(d)
        # recordings made before the one sampler field hold two booleans
        legacy = {k: bool(d.pop(k)) for k in ("with_replacement", "uniform_subset") if k in d}
        if legacy:
            if all(legacy.values()) and len(legacy) == 2:
                raise ValueError("`with_replacement` and `uniform_subset` exclude each other: pick one sampler")
            d.setdefault("sampler", next((k for k, v in legacy.items() if v), "without_replacement"))
        d["seeds"] = tuple(d["seeds"])
        d["observables"] = tuple(d["observables"])
        return cls(**d)


def build_problem(config: TrainConfig) -> Problem:
    """The problem named by ``config`` (one of :data:`PROBLEMS`, with its kwargs)."""
    kw = dict(config.problem_kwargs)
    for name in ("hidden", "channels"):
        if isinstance(kw.get(name), list):
            kw[name] = tuple(kw[name])
    return {
        "digits_mlp": _builtin.digits_mlp,
        "digits_cnn": _networks.digits_cnn,
        "mnist1d_mlp": _mnist1d.mnist1d_mlp,
        "mnist1d_cnn": _mnist1d.mnist1d_cnn,
    }[config.problem](**kw)


def build_variant(config: TrainConfig) -> Variant:
    """``sde_sam.variants.get(config.variant, **config.variant_kwargs)`` (SGD takes no kwargs)."""
    kw = dict(config.variant_kwargs)
    if config.variant.lower() == "sgd":
        return _variants.sgd()
    return _variants.get(config.variant, **kw)


def build_sampler(config: TrainConfig):
    """The config's sampler (:data:`SAMPLERS`): shuffled epochs (default), i.i.d. draws, or a fresh uniform subset
    each step (the sampler the SDE models exactly)."""
    return SAMPLERS[config.sampler](config.batch_size)


def build_schedule(config: TrainConfig) -> Schedule | None:
    if config.schedule == "constant":
        return None
    return Schedule(config.schedule, total_steps=config.steps, **dict(config.schedule_kwargs))


def micro_batch_size(variant: Variant, batch_size: int, n: int) -> int:
    """The ``m`` of ``E||g_m||`` for a variant: its micro-batch size, ``n`` for full-gradient ascent, else ``B``."""
    return variant.rule.ascent_batch_size(batch_size, n)


def build_momentum(config: TrainConfig) -> Momentum | None:
    """The config's :class:`~sde_sam.Momentum`, or ``None`` without momentum."""
    return Momentum(config.momentum, config.nesterov) if config.momentum else None


def sde_time(config: TrainConfig, steps) -> np.ndarray:
    """SDE time of discrete step ``k``: ``sum_{j<k} eta_j`` (``k * eta`` for a constant schedule), times
    ``1 / (1 - beta)`` with momentum (the rescaled-learning-rate SDE's time)."""
    steps = np.asarray(steps)
    sched = build_schedule(config)
    scale = 1.0 / (1.0 - config.momentum)
    if sched is None:
        return np.asarray(steps * config.eta * scale)
    cum = np.concatenate([[0.0], np.cumsum(sched.values(np.arange(int(steps.max()))))]) * config.eta * scale
    return np.asarray(cum[steps])
