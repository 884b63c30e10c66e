"""The contract between the stages of ``sde-sam reproduce`` and their figures and checks (docs/layout.md, "A stage
and what reads it").

Per stage, one frozen **config type** (what the stage computes from: a preset's entry, validated before any work,
unknown or missing keys named) and one **data type** (the JSON data the stage returns and its figures and checks
read: a ``TypedDict``, so a key renamed on one side fails the type check of the other, not the run after the
computation). :data:`CONFIGS` maps a stage's name to its config type, :class:`Results` a stage's name to its data
type.

This package imports nothing of the studies (``analysis``), the figures, the checks or JAX: it stands below them
all, and the figures and checks, which stand below the studies, import it.
"""

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, NotRequired, Self, TypedDict, TypeVar

__all__ = [
    "CONFIGS",
    "DriftConfig",
    "EscapeConfig",
    "EscapeMapConfig",
    "EtaMapConfig",
    "EtaRhoConfig",
    "FidelityConfig",
    "GeneralizationConfig",
    "GradNormConfig",
    "Output",
    "Results",
    "SgnConfig",
    "StageConfig",
    "SymbolicConfig",
    "TimingConfig",
    "TrainSdeConfig",
    "TrainingConfig",
    "VarianceTermConfig",
    "WeakOrderConfig",
    "config_of",
    "mismatches",
    "plain",
]

# -- configs ----------------------------------------------------------------------------------------------------

#: A variant of a preset: ``[label, name, kwargs]``, ``name`` a key of :func:`sde_sam.variants.get`
#: (the registry name that :class:`sde_sam.train.TrainConfig` records too).
VariantEntry = tuple[str, str, Mapping[str, Any]]

#: The metadata of a field a preset may leave out: absent from the config's JSON (and from its cache hash) while
#: ``None``. A field whose metadata names a ``"config"`` type holds that nested config.
OPTIONAL = {"omit_none": True}


def _frozen(value: Any) -> Any:
    """Lists as tuples, recursively (mappings keep their keys): a config's sequences cannot change under it."""
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _frozen(v) for k, v in value.items()}
    return value


def plain(value: Any) -> Any:
    """The JSON form of a config value: configs as :meth:`StageConfig.to_dict`, tuples as lists, mappings as dicts."""
    if isinstance(value, StageConfig):
        return value.to_dict()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """A stage's frozen config. Built from a preset's entry by :meth:`from_dict` (which names an unknown or missing
    key and the valid ones); :meth:`to_dict` gives the entry back, the JSON whose hash keys the stage's cache."""

    stage: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any] | Self) -> Self:
        if isinstance(entry, cls):
            return entry
        if not isinstance(entry, Mapping):
            raise TypeError(f"the {cls.stage or cls.__name__} config must be a mapping, got {type(entry).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(entry) - set(fields))
        missing = [
            n
            for n, f in fields.items()
            if n not in entry and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if unknown or missing:
            what = "; ".join(
                s
                for s in (
                    f"unknown key(s) {', '.join(unknown)}" if unknown else "",
                    f"missing key(s) {', '.join(missing)}" if missing else "",
                )
                if s
            )
            raise ValueError(f"the {cls.stage or cls.__name__} config: {what}; valid keys: {', '.join(fields)}")
        kwargs = {}
        for name, value in entry.items():
            nested = fields[name].metadata.get("config")
            kwargs[name] = nested.from_dict(value) if nested is not None and value is not None else _frozen(value)
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if not (f.metadata.get("omit_none") and getattr(self, f.name) is None)
        }

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (validated as :meth:`from_dict` validates)."""
        return type(self).from_dict(self.to_dict() | changes)


@dataclasses.dataclass(frozen=True)
class DriftConfig(StageConfig):
    """Exact expected steps on a small smooth problem (C1, C2, C8, C9)."""

    stage: ClassVar[str] = "drift"
    seed: int
    n: int
    batch_size: int
    m: int
    rhos: tuple[float, ...]
    coef_rhos: tuple[float, ...]
    coef_ms: tuple[int, ...]
    sigmas: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class VarianceTermConfig(StageConfig):
    """m-USAM's variance regularizer against m (C2, F4)."""

    stage: ClassVar[str] = "variance_term"
    seed: int
    l2: float
    init_scale: float
    batch_size: int
    rho: float
    num_batches: int
    ms: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class GradNormConfig(StageConfig):
    """``E||g_B||`` against the batch size (C3)."""

    stage: ClassVar[str] = "grad_norm"
    seed: int
    batch_sizes: tuple[int, ...]
    num_batches: int


@dataclasses.dataclass(frozen=True)
class WeakOrderConfig(StageConfig):
    """The weak-order study (C4, F3): ``config`` overrides :class:`analysis.weak_order.Config`, ``parts`` its parts
    (``None``: all)."""

    stage: ClassVar[str] = "weak_order"
    config: Mapping[str, Any]
    parts: tuple[str, ...] | None


@dataclasses.dataclass(frozen=True)
class EtaRhoConfig(StageConfig):
    """USAM's weak error over (eta, rho) with exact moments (F7)."""

    stage: ClassVar[str] = "eta_rho"
    etas: tuple[float, ...]
    rhos: tuple[float, ...]
    t1: float


@dataclasses.dataclass(frozen=True)
class EscapeMapConfig(StageConfig):
    """C5's map: ``eta`` x ``rho lambda_sharp`` x m, the model ``(drift, diffusion)``, read inside
    ``rho lambda_sharp <= theory_rho_lambda``; ``num_paths`` model paths per point (absent: ``num_runs``)."""

    stage: ClassVar[str] = "escape map"
    etas: tuple[float, ...]
    rho_lambdas: tuple[float, ...]
    num_runs: int
    steps: int
    theory_rho_lambda: float
    model: tuple[str, str] = ("expected", "leading")
    num_paths: int | None = dataclasses.field(default=None, metadata=OPTIONAL)


@dataclasses.dataclass(frozen=True)
class EscapeConfig(StageConfig):
    """Escape from the sharp basin against m (C5, F1); ``models``: the ladder's ``(drift, diffusion)`` pairs
    (absent: :data:`analysis.escape.ESCAPE_MODELS`)."""

    stage: ClassVar[str] = "escape"
    seed: int
    n: int
    sharp_curvature: float
    noise_scale: float
    batch_size: int
    rho: float
    eta: float
    steps: int
    every: int
    num_runs: int
    num_paths: int
    drift_samples: int
    map: EscapeMapConfig | None = dataclasses.field(default=None, metadata=OPTIONAL | {"config": EscapeMapConfig})
    models: tuple[tuple[str, str], ...] | None = dataclasses.field(default=None, metadata=OPTIONAL)


@dataclasses.dataclass(frozen=True)
class TrainingConfig(StageConfig):
    """tr Sigma per variant along training (F2, F6, C6), by :func:`analysis.m_sharpness.trace_sigma_table`."""

    stage: ClassVar[str] = "training"
    problem: str
    problem_kwargs: Mapping[str, Any]
    batch_size: int
    eta: float
    rho: float
    steps: int
    every: int
    seeds: tuple[int, ...]
    ms: tuple[int, ...]
    timing_repeats: int
    rw_ess: tuple[float, ...] | None = dataclasses.field(default=None, metadata=OPTIONAL)


@dataclasses.dataclass(frozen=True)
class TrainSdeConfig(StageConfig):
    """Training against its SDE (F2), by :func:`analysis.training_vs_sde.run`."""

    stage: ClassVar[str] = "train_sde"
    problem: tuple[str, Mapping[str, Any]]
    variants: tuple[VariantEntry, ...]
    batch_size: int
    eta: float
    steps: int
    every: int
    seeds: tuple[int, ...]
    paths: int
    num_samples: int
    noise_batches: int
    top_k: int
    observables: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class SgnConfig(StageConfig):
    """Noise structure along SGD training (F5)."""

    stage: ClassVar[str] = "sgn"
    seed: int
    problem: str
    problem_kwargs: Mapping[str, Any]
    batch_size: int
    eta: float
    steps: int
    every: int
    k: int
    probes: int
    tail_batches: int


@dataclasses.dataclass(frozen=True)
class GeneralizationConfig(StageConfig):
    """Test accuracy against m under label noise (F10, C11), by :func:`analysis.generalization.run`; ``models``:
    ``[problem, problem_kwargs, overrides]``."""

    stage: ClassVar[str] = "generalization"
    models: tuple[tuple[str, Mapping[str, Any], Mapping[str, Any]], ...]
    noise: tuple[float, ...]
    batch_size: int
    eta: float
    rho: float
    steps: int
    every: int
    seeds: tuple[int, ...]
    ms: tuple[int, ...]
    rw: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class TimingConfig(StageConfig):
    """Cost per step of every variant and of the simulator (F8, C7)."""

    stage: ClassVar[str] = "timing"
    hidden: int
    batch_size: int
    steps: int
    repeats: int
    ms: tuple[int, ...]
    serial_k: tuple[int, ...]
    paths: int
    cost: str
    simulator_steps: int | None = dataclasses.field(default=None, metadata=OPTIONAL)


@dataclasses.dataclass(frozen=True)
class SymbolicConfig(StageConfig):
    """The sympy drifts and diffusions of the report."""

    stage: ClassVar[str] = "symbolic"
    setting: str


@dataclasses.dataclass(frozen=True)
class EtaMapConfig(StageConfig):
    """:func:`sde_sam.validity_map` per variant over eta (C10): ``problem`` or several ``problems``
    (``[name, kwargs]``), ``rungs`` ``[drift, diffusion, order]``; ``diffusion_samples`` (absent: the diffusion's
    default)."""

    stage: ClassVar[str] = "eta_map"
    seed: int
    batch_size: int
    etas: tuple[float, ...]
    steps: int
    every: int
    num_runs: int
    drift_samples: int
    observables: tuple[str, ...]
    variants: tuple[VariantEntry, ...]
    rungs: tuple[tuple[str, str, int], ...]
    svag: tuple[int, ...]
    max_refine: int
    problem: tuple[str, Mapping[str, Any]] | None = dataclasses.field(default=None, metadata=OPTIONAL)
    problems: tuple[tuple[str, Mapping[str, Any]], ...] | None = dataclasses.field(default=None, metadata=OPTIONAL)
    diffusion_samples: int | None = dataclasses.field(default=None, metadata=OPTIONAL)

    def __post_init__(self):
        if (self.problem is None) == (self.problems is None):
            raise ValueError("the eta_map config names one `problem` or several `problems`, not both and not neither")

    @property
    def all_problems(self) -> tuple[tuple[str, Mapping[str, Any]], ...]:
        """``problems``, or the one ``problem``."""
        return self.problems if self.problems is not None else (self.problem,) if self.problem is not None else ()


@dataclasses.dataclass(frozen=True)
class FidelityConfig(StageConfig):
    """The fidelity study's two parts (F9), each :func:`analysis.fidelity.run`'s config (``None``: skipped)."""

    stage: ClassVar[str] = "fidelity"
    escape: Mapping[str, Any] | None = None
    training: Mapping[str, Any] | None = None


CONFIGS: dict[str, type[StageConfig]] = {
    c.stage: c
    for c in (
        DriftConfig,
        VarianceTermConfig,
        GradNormConfig,
        WeakOrderConfig,
        EtaRhoConfig,
        EscapeConfig,
        TrainingConfig,
        GeneralizationConfig,
        TrainSdeConfig,
        SgnConfig,
        TimingConfig,
        FidelityConfig,
        EtaMapConfig,
        SymbolicConfig,
    )
}


def config_of(stage: str, entry: Mapping[str, Any] | StageConfig) -> StageConfig:
    """The config of ``stage`` from a preset's entry (:meth:`StageConfig.from_dict`)."""
    if stage not in CONFIGS:
        raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(CONFIGS)}")
    return CONFIGS[stage].from_dict(entry)


# -- data ---------------------------------------------------------------------------------------------------------


class MeanStderr(TypedDict):
    mean: float
    stderr: float
    num_seeds: int
    per_seed: NotRequired[list[float]]


class SlopeFit(TypedDict):
    slope: float
    slope_stderr: float
    log_c: float


class VarianceCoefficient(TypedDict):
    """The coefficient of ``(rho/2) grad tr Sigma`` per variant at each of ``rhos``, and its expected value."""

    rhos: list[float]
    values: dict[str, list[float]]
    expected: dict[str, float]


class FUsamCoefficient(TypedDict):
    """F-USAM's coefficient of ``(rho/2) grad ||g||^2`` per ``sigma`` (as a string), and ``1 - sigma``."""

    rho: float
    values: dict[str, float]
    expected: dict[str, float]


class SamOnRow(TypedDict):
    rho: float
    rel_err_masked: float
    rel_err_unmasked: float


class SamOn(TypedDict):
    rows: list[SamOnRow]
    max_unmasked_perturbation: float
    max_masked_perturbation: float
    masked_leaf: str
    num_masked: int
    d: int


class DriftData(TypedDict):
    problem: str
    n: int
    B: int
    d: int
    rhos: list[float]
    trace_sigma: float
    c_B: float
    residuals: dict[str, list[float]]
    residual_fits: dict[str, SlopeFit]
    variance_coefficient: VarianceCoefficient
    f_usam_grad_norm_coefficient: FUsamCoefficient
    sam_on: SamOn


class VarianceTermRow(TypedDict):
    m: int
    c_m: float
    coef_general: float
    coef_general_stderr: float
    coef_discrete: float
    coef_discrete_stderr: float


class VarianceTermData(TypedDict):
    problem: str
    n: int
    B: int
    rho: float
    num_batches: int
    trace_sigma: float
    rows: list[VarianceTermRow]


class GradNormRow(TypedDict):
    B: int
    value: float
    stderr: float


class GradNormData(TypedDict):
    problem: str
    n: int
    rows: list[GradNormRow]
    full_grad_norm: float


class WeakOrderData(TypedDict):
    """:func:`analysis.weak_order.run`'s result: per part, rows by label."""

    config: dict[str, Any]
    seed: int
    jax: str
    device: str
    wall_time_s: float
    linreg_exact: NotRequired[dict[str, dict[str, Any]]]
    diffusion_ablation: NotRequired[dict[str, dict[str, Any]]]
    msweep_usam: NotRequired[dict[str, Any]]
    linreg_control: NotRequired[dict[str, dict[str, Any]]]
    nonconvex_mc: NotRequired[dict[str, dict[str, Any]]]
    msweep_sam: NotRequired[dict[str, Any]]
    eta_rho_map: NotRequired[dict[str, Any]]


class EtaRhoData(TypedDict):
    variant: str
    method: str
    t1: float
    etas: list[float]
    rhos: list[float]
    errors: list[list[float]]
    eta_slopes: dict[str, dict[str, Any]]
    rho_slopes: dict[str, dict[str, Any]]
    lines: dict[str, dict[str, Any]]
    fit: dict[str, float]
    fit_informative: bool
    product: dict[str, float]
    scaling: str


class EscapeStats(TypedDict):
    """The fraction of runs past the barrier: at the end and averaged over time, with standard errors."""

    final: float
    final_stderr: float
    time_avg: float
    time_avg_stderr: float
    kept: int


class EscapeModelStats(EscapeStats):
    index: int


class EscapeRow(TypedDict):
    index: int
    m: int
    discrete: EscapeStats
    diverged: dict[str, int]
    models: dict[str, EscapeModelStats]


class EscapeMapRow(TypedDict):
    m: int
    discrete: EscapeStats
    model: EscapeStats
    diverged: dict[str, int]


class EscapeMapPoint(TypedDict):
    eta: float
    rho: float
    rho_lambda: float
    rows: dict[str, EscapeMapRow]


class EscapeMap(TypedDict):
    points: list[EscapeMapPoint]
    model: str
    num_runs: int
    num_paths: NotRequired[int]
    steps: int
    theory_rho_lambda: float
    sharp_curvature: float


class EscapeHead(TypedDict):
    """The escape problem's name, its barrier, the sampler and the batch size ``B``."""

    problem: str
    barrier: float
    sampler: str
    B: int


class EscapeMapData(EscapeHead):
    """The map alone (``python -m analysis.escape_map``)."""

    map: EscapeMap


class EscapeData(EscapeHead):
    """The escape stage: the rows at its one point (``eta``, ``rho``) and, when its config has one, the map."""

    rows: dict[str, EscapeRow]
    models: list[str]
    eta: float
    rho: float
    map: NotRequired[EscapeMap]


class TrainingRow(TypedDict):
    trace_sigma_final: MeanStderr
    trace_sigma_area: MeanStderr
    loss_final: MeanStderr
    test_accuracy_final: MeanStderr
    test_loss_final: MeanStderr
    ess_fraction_final: MeanStderr
    rw_setting: NotRequired[dict[str, Any]]
    trace_sigma_mean_curve: list[float]
    steps: list[int]
    time_per_step_s: float | None
    num_diverged: int
    wall_s: float


class TrainingData(TypedDict):
    rows: dict[str, TrainingRow]
    claims: dict[str, Any]
    paper_reference: dict[str, float]
    batch_size: int
    eta: float
    rho: float


class Comparison(TypedDict):
    """One observable of training against its SDE: means, 95 % bands and their gap along the recorded steps."""

    train_mean: list[float]
    train_band95: list[float]
    sde_mean: list[float]
    sde_band95: list[float]
    gap: list[float]
    gap_stderr: list[float]
    relative_gap: list[float]
    max_relative_gap: float
    final_relative_gap: float
    max_abs_z: float


class TrainSdeVariant(TypedDict):
    config: dict[str, Any]
    times: list[float]
    steps: list[int]
    comparison: dict[str, Comparison]
    noise: dict[str, Any]
    num_diverged: dict[str, int]
    wall_s: dict[str, float]


class TrainSdeData(TypedDict):
    preset: str
    preset_config: dict[str, Any]
    variants: dict[str, TrainSdeVariant]
    provenance: dict[str, Any]
    wall_time_s: float
    complete: bool


class SgnRow(TypedDict):
    step: int
    loss: float
    cosine: float
    cosine_stderr: float
    overlap: float
    trace_ratio: float
    trace_sigma: float
    trace_hessian: float
    tail_index: float
    tail_index_stderr: float


class SgnData(TypedDict):
    problem: str
    d: int
    k: int
    rows: list[SgnRow]


class GeneralizationVariant(TypedDict):
    loss_final: MeanStderr
    accuracy_final: MeanStderr
    test_loss_final: MeanStderr
    test_accuracy_final: MeanStderr
    num_diverged: int
    wall_s: float
    variant_kwargs: dict[str, Any]


class GeneralizationModel(TypedDict):
    """One model's rows: by label noise (as a string), then by variant."""

    problem: str
    rows: dict[str, dict[str, GeneralizationVariant]]
    rw_calibration: dict[str, dict[str, Any]]
    config: dict[str, Any]
    gpu_settles: bool


class GeneralizationData(TypedDict):
    models: dict[str, GeneralizationModel]
    batch_size: int
    rho: float
    noise: list[float]
    wall_s: float
    provenance: dict[str, Any]


class TimingRow(TypedDict):
    ms_per_step: float
    ms_q25: float
    ms_q75: float
    vs_SGD: float
    vs_SAM: float
    flops: NotRequired[float]
    bytes: NotRequired[float]
    flops_vs_SAM: NotRequired[float]


class TimingData(TypedDict):
    problem: str
    d: int
    B: int
    steps_per_call: int
    simulator_steps_per_call: int
    repeats: int
    device: str
    platform: str
    forward_flops_vs_SAM: float
    rw_sam_extra_forwards: float
    rows: dict[str, TimingRow]


class BudgetRow(TypedDict):
    """One model of a variant's error budget: its gap at the finest step and at ``dt = eta``, and its agreement."""

    model: str
    refine: int
    gap_at_h: float | None
    gap: float
    stderr: float
    euler_maruyama: float | None
    agreement: str


class Verdict(TypedDict):
    kind: str
    rung: str | None
    text: str


class FidelityVariant(TypedDict):
    kind: str
    config: dict[str, Any]
    times: list[float]
    discrete: dict[str, Any]
    tau: dict[str, float]
    svag: dict[str, Any]
    svag_converged: Any
    rungs: Any
    verdicts: dict[str, Verdict]
    diverged: Any
    compiles: int
    compile_s: float
    wall_s: float
    notes: Any
    budget: list[BudgetRow]
    m: NotRequired[int]


class FidelityPart(TypedDict):
    problem: str
    sampler: str
    key_observable: str
    variants: dict[str, FidelityVariant]
    barrier: NotRequired[float]


class FidelityData(TypedDict):
    config: dict[str, Any]
    escape: NotRequired[FidelityPart | None]
    training: NotRequired[FidelityPart | None]
    wall_s: float


class SvagReading(TypedDict):
    label: str
    gap: list[float]
    stderr: list[float]
    tau: float
    z_alpha: float
    runs: int
    agreement: str
    z: float
    ratio: float


class EtaMapPoint(TypedDict):
    eta: float
    verdicts: dict[str, Verdict]
    svag: dict[str, SvagReading | None]
    tau: dict[str, float]
    compiles: int


class EtaMapVariant(TypedDict):
    points: list[EtaMapPoint]
    compiles: int
    compile_s: float
    wall_s: float
    table: str
    rungs: list[str]


class EtaMapData(TypedDict):
    problem: str
    batch_size: int
    steps: int
    num_runs: int
    etas: list[float]
    diffusion_samples: NotRequired[int]
    observables: list[str]
    variants: dict[str, EtaMapVariant]


class SymbolicData(TypedDict):
    markdown: str


D = TypeVar("D")


class Output(TypedDict, Generic[D]):
    """What a stage function returns: its ``data`` (the stage's data type) and, for some, named ``arrays``."""

    data: D
    arrays: NotRequired[dict[str, Any]]


class Results(TypedDict, total=False):
    """The data of every stage a run computed, by stage name (what figures and checks receive)."""

    drift: DriftData
    variance_term: VarianceTermData
    grad_norm: GradNormData
    weak_order: WeakOrderData
    eta_rho: EtaRhoData
    escape: EscapeData | EscapeMapData
    training: TrainingData
    generalization: GeneralizationData
    train_sde: TrainSdeData
    sgn: SgnData
    timing: TimingData
    fidelity: FidelityData
    eta_map: EtaMapData
    symbolic: SymbolicData


def mismatches(stage: str, data: Any, *, unknown: bool = True) -> list[str]:
    """Where ``data`` departs from the data type of ``stage`` (:class:`Results`): each a path and what is wrong (a
    missing key, a value of another type, and with ``unknown`` a key the type does not declare); empty when it
    conforms."""
    hints = _hints(Results)
    if stage not in hints:
        raise ValueError(f"unknown stage {stage!r}; valid: {', '.join(hints)}")
    out: list[str] = []
    _conform(data, hints[stage], stage, out)
    return out if unknown else [m for m in out if ": unknown key " not in m]


@functools.cache
def _hints(typed_dict: type) -> dict[str, Any]:
    """A ``TypedDict``'s field types, resolved once (every row of a stage's data asks again)."""
    return typing.get_type_hints(typed_dict)


def _conform(value: Any, hint: Any, path: str, out: list[str]) -> None:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return
    if typing.is_typeddict(hint):
        if not isinstance(value, dict):
            out.append(f"{path}: a mapping expected, got {type(value).__name__}")
            return
        fields = _hints(hint)
        missing = sorted(hint.__required_keys__ - set(value))
        unknown = sorted(set(value) - set(fields))
        out += [f"{path}: missing key {k!r}" for k in missing] + [f"{path}: unknown key {k!r}" for k in unknown]
        for k in set(value) & set(fields):
            _conform(value[k], fields[k], f"{path}.{k}", out)
    elif origin in (types.UnionType, typing.Union):
        trials = []
        for a in args:
            trial: list[str] = []
            _conform(value, a, path, trial)
            if not trial:
                return
            trials.append(trial)
        out += min((t for a, t in zip(args, trials, strict=True) if a is not type(None)), key=len)
    elif origin in (dict, Mapping):
        if not isinstance(value, dict):
            out.append(f"{path}: a mapping expected, got {type(value).__name__}")
            return
        for k, v in value.items():
            _conform(v, args[1] if args else Any, f"{path}[{k!r}]", out)
    elif origin in (list, tuple):
        if not isinstance(value, list | tuple):
            out.append(f"{path}: a list expected, got {type(value).__name__}")
            return
        for i, v in enumerate(value):
            _conform(v, args[0] if args else Any, f"{path}[{i}]", out)
    elif hint is type(None):
        if value is not None:
            out.append(f"{path}: None expected, got {type(value).__name__}")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            out.append(f"{path}: a number expected, got {type(value).__name__}")
    elif hint in (int, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        out.append(f"{path}: {hint.__name__} expected, got {type(value).__name__}")
