"""Does an SDE describe this training run? The ladder, SVAG and a verdict per observable (docs/validation.md).

:func:`validate` makes ``num_runs`` discrete runs, SVAG at each ``l`` and every rung of the ladder (drift x diffusion
x order that the variant supports), each rung refined in ``dt`` until its gaps change by no more than their Monte
Carlo error; it compares each with the discrete runs by equivalence tests (:mod:`._verdict`) and returns a
:class:`Validation`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._checks import check_integer
from .._compiles import counting
from .._ensemble import mean_stderr
from .._estimators._observables import Record, observables
from .._io import from_jsonable, load_result, provenance, save_result, to_jsonable, wrong_kind
from .._problems._problem import Problem
from .._problems._sampler import AbstractSampler
from .._sde._diffusion import (
    AbstractDiffusion,
    EmpiricalDiffusion,
    FirstOrderDiffusion,
    LeadingDiffusion,
    as_diffusion,
)
from .._sde._drift import AbstractDrift, ExpectedDrift, GeneralDrift, as_drift
from .._sde._sde_model import sde_model
from .._sde._simulate import simulate
from .._training._momentum import Momentum, as_momentum
from .._training._runner import Runs, as_record, run_discrete
from .._variants._variant import Variant
from ._verdict import Comparison, Tolerance, Verdict, verdict_of


@dataclasses.dataclass(frozen=True)
class Rung:
    """One SDE model of the ladder: a drift, a diffusion and the order of the drift (1, or 2: ``b + (eta/2)(Db)b``)."""

    drift: AbstractDrift = dataclasses.field(default_factory=GeneralDrift)
    diffusion: AbstractDiffusion = dataclasses.field(default_factory=LeadingDiffusion)
    order: int = 1

    def __post_init__(self):
        object.__setattr__(self, "drift", as_drift(self.drift))
        object.__setattr__(self, "diffusion", as_diffusion(self.diffusion))
        if self.order not in (1, 2) or isinstance(self.order, bool):
            raise ValueError(f"Rung `order` must be 1 or 2, got {self.order!r}")

    @property
    def label(self) -> str:
        return f"{self.drift.name}/{self.diffusion.name}/o{self.order}"

    def supports(self, variant: Variant, momentum: Momentum | None = None) -> bool:
        if self.order == 2 and (momentum is not None or not variant.differentiable_update):
            return False
        return self.drift.supports(variant) and self.diffusion.supports(variant)


def ladder(
    variant: Variant,
    *,
    drifts: Sequence[AbstractDrift | str] = (GeneralDrift(), ExpectedDrift()),
    diffusions: Sequence[AbstractDiffusion | str] = (LeadingDiffusion(), FirstOrderDiffusion(), EmpiricalDiffusion()),
    orders: Sequence[int] = (1, 2),
    momentum: Momentum | None = None,
) -> tuple[Rung, ...]:
    """The rungs ``drifts x diffusions x orders`` that ``variant`` supports (each choice's ``supports``; order 2 where
    the update is differentiable and there is no momentum). A variant that does not perturb (SGD) has one drift,
    ``g``, and an exact leading diffusion, so the first drift and the leading diffusion stand for all."""
    drifts = tuple(as_drift(d) for d in drifts)
    diffusions = tuple(as_diffusion(d) for d in diffusions)
    if not variant.perturbs:
        leading = tuple(d for d in diffusions if isinstance(d, LeadingDiffusion))
        drifts, diffusions = drifts[:1], leading or diffusions[:1]
    out = [Rung(d, s, o) for o in orders for d in drifts for s in diffusions]
    return tuple(r for r in out if r.supports(variant, momentum))


# -- statistics ---------------------------------------------------------------------------------------------------


def _kept(values: np.ndarray) -> np.ndarray:
    """Rows (runs or paths) without NaN: diverged ones are left out."""
    values = np.asarray(values, np.float64)
    return values[~np.any(np.isnan(values), axis=1)]


def _mean_se(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per recorded time: the mean and its standard error (two-pass, ``ddof=1``) over the kept rows."""
    return mean_stderr(_kept(values))


def _compare(label: str, model: np.ndarray, ref: np.ndarray, tau: float, z_alpha: float, runs: int) -> Comparison:
    ma, sa = _mean_se(model)
    mb, sb = _mean_se(ref)
    return Comparison(label, ma - mb, np.hypot(sa, sb), tau, z_alpha, runs)


def _default_every(steps: int) -> int:
    """The largest divisor of ``steps`` no larger than ``steps / 10`` (about 10 recorded times)."""
    best = 1
    for e in range(1, max(1, steps // 10) + 1):
        if steps % e == 0:
            best = e
    return best


# -- the result ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Level:
    """A rung simulated at one ``dt = h / refine``: its comparisons per observable."""

    refine: int
    dt: float
    comparisons: dict[str, Comparison]
    diverged: int

    def to_dict(self) -> dict:
        return {
            "refine": self.refine,
            "dt": self.dt,
            "diverged": self.diverged,
            "comparisons": {o: c.to_dict() for o, c in self.comparisons.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> Level:
        return cls(
            int(d["refine"]),
            float(d["dt"]),
            {o: Comparison.from_dict(c) for o, c in d["comparisons"].items()},
            int(d["diverged"]),
        )


@dataclasses.dataclass(frozen=True)
class Validation:
    """What :func:`validate` found (docs/validation.md). Per observable: the discrete mean and standard error at every
    recorded time, the tolerance ``tau``, every model's comparison (SVAG at each ``l``, each rung at each ``dt``)
    and the :class:`Verdict`. ``print(v)`` is the table; :meth:`plot` the figure; :meth:`save` / :meth:`load`."""

    config: dict
    times: np.ndarray
    discrete: dict[str, dict[str, np.ndarray]]
    tau: dict[str, float]
    svag: dict[int, dict[str, Comparison]]
    svag_converged: dict[str, Comparison] | None
    rungs: dict[str, tuple[Level, ...]]
    verdicts: dict[str, Verdict]
    diverged: dict[str, int]
    compiles: int
    compile_s: float
    wall_s: float
    notes: tuple[str, ...] = ()

    @property
    def observables(self) -> tuple[str, ...]:
        return tuple(self.verdicts)

    def final(self, rung: str) -> Level:
        """The finest ``dt`` of ``rung`` (its label)."""
        return self.rungs[rung][-1]

    def comparisons(self, observable: str) -> list[Comparison]:
        """SVAG at each ``l`` and every rung at its finest ``dt``, on ``observable``."""
        out = [c[observable] for _, c in sorted(self.svag.items())]
        return out + [levels[-1].comparisons[observable] for levels in self.rungs.values()]

    def budget(self, observable: str) -> list[dict]:
        """The error budget on ``observable``: per rung, the gap at ``dt = h`` and at its finest ``dt`` (what the
        Euler-Maruyama error was) beside SVAG's at the largest ``l`` (the finite-learning-rate part no SDE closes)."""
        rows = []
        for label, levels in self.rungs.items():
            c0, c1 = levels[0].comparisons[observable], levels[-1].comparisons[observable]
            i = c1.worst
            g0, g1 = float(c0.gap[i]), float(c1.gap[i])
            rows.append(
                {
                    "model": label,
                    "refine": levels[-1].refine,
                    "gap_at_h": g0,
                    "gap": g1,
                    "stderr": float(c1.stderr[i]),
                    "euler_maruyama": g0 - g1,
                    "agreement": c1.agreement.value,
                }
            )
        if self.svag:
            c = self.svag[max(self.svag)][observable]
            rows.append(
                {
                    "model": c.label,
                    "refine": max(self.svag),
                    "gap_at_h": None,
                    "gap": float(c.gap[c.worst]),
                    "stderr": float(c.stderr[c.worst]),
                    "euler_maruyama": None,
                    "agreement": c.agreement.value,
                }
            )
        return rows

    # -- text -----------------------------------------------------------------------------------------------------
    def __str__(self) -> str:
        c = self.config
        tol = c["tolerance"]
        head = (
            f"Validation of {c['variant']['name']} (rho = {c['variant']['rho']:g}) on {c['problem']}: eta = "
            f"{c['eta']:g}, {c['steps']} steps, {c['num_runs']} runs and {c['num_paths']} paths; tolerance "
            f"{100 * tol['relative']:g} % of each observable's scale, z_a = {tol['z_alpha']:g}; "
            f"{self.compiles} programs compiled"
        )
        lines = [head, "", "| observable | discrete at the end | tau | verdict |", "|---|---|---|---|"]
        for o, v in self.verdicts.items():
            m, s = self.discrete[o]["mean"][-1], self.discrete[o]["stderr"][-1]
            lines.append(f"| {o} | {m:.4g} ± {s:.2g} | {self.tau[o]:.3g} | {v.text} |")
        lines += [
            "",
            "Largest gap over the recorded times, ± s.e. [test], per model (rungs at their finest dt):",
            "",
            "| model | dt | " + " | ".join(self.observables) + " |",
            "|---|---|" + "---|" * len(self.observables),
        ]
        rows = [(f"SVAG l={lv}", f"eta/{lv}", comps) for lv, comps in sorted(self.svag.items())]
        unit = "h" if c.get("momentum") else "eta"
        rows += [(label, f"{unit}/{levels[-1].refine}", levels[-1].comparisons) for label, levels in self.rungs.items()]
        for label, dt, comps in rows:
            cells = []
            for o in self.observables:
                k = comps[o]
                cells.append(f"{float(k.gap[k.worst]):+.3g} ± {float(k.stderr[k.worst]):.2g} [{k.agreement.value}]")
            lines.append(f"| {label} | {dt} | " + " | ".join(cells) + " |")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    # -- figure ---------------------------------------------------------------------------------------------------
    def plot(self, axes=None):
        """One panel per observable: each model's gap over time with its ``z_a`` s.e. band, and the tolerance band
        ``[-tau, tau]``. Returns the figure."""
        import matplotlib.pyplot as plt

        obs = self.observables
        if axes is None:
            fig, axes = plt.subplots(1, len(obs), figsize=(4.2 * len(obs), 3.4), squeeze=False)
            axes = axes[0]
        else:
            axes = np.atleast_1d(axes)
            fig = axes[0].figure
        for ax, o in zip(axes, obs, strict=True):
            ax.axhspan(-self.tau[o], self.tau[o], color="0.85", label="tolerance")
            for k in self.comparisons(o):
                z = k.z_alpha
                (line,) = ax.plot(self.times, k.gap, marker=".", label=f"{k.label} [{k.agreement.value}]")
                ax.fill_between(
                    self.times, k.gap - z * k.stderr, k.gap + z * k.stderr, color=line.get_color(), alpha=0.2
                )
            ax.axhline(0.0, color="k", lw=0.6)
            ax.set_title(f"{o}: {self.verdicts[o].kind.value}", fontsize=9)
            ax.set_xlabel("time (k eta)")
            ax.set_ylabel("gap, model - discrete")
        axes[-1].legend(fontsize=6, loc="best")
        fig.tight_layout()
        return fig

    # -- storage --------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "kind": "Validation",
            "config": self.config,
            "times": np.asarray(self.times).tolist(),
            "discrete": {
                o: {k: np.asarray(v, np.float64).tolist() for k, v in d.items()} for o, d in self.discrete.items()
            },
            "tau": self.tau,
            "svag": {str(lv): {o: c.to_dict() for o, c in comps.items()} for lv, comps in self.svag.items()},
            "svag_converged": None
            if self.svag_converged is None
            else {o: c.to_dict() for o, c in self.svag_converged.items()},
            "rungs": {label: [lv.to_dict() for lv in levels] for label, levels in self.rungs.items()},
            "verdicts": {o: v.to_dict() for o, v in self.verdicts.items()},
            "diverged": self.diverged,
            "compiles": self.compiles,
            "compile_s": self.compile_s,
            "wall_s": self.wall_s,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Validation:
        """The inverse of :meth:`to_dict`, also from its JSON (``"nan"``/``"inf"`` strings read back as floats)."""
        d = from_jsonable(d)
        sc = d.get("svag_converged")
        return cls(
            config=d["config"],
            times=np.asarray(d["times"], np.float64),
            discrete={o: {k: np.asarray(v, np.float64) for k, v in x.items()} for o, x in d["discrete"].items()},
            tau={o: float(t) for o, t in d["tau"].items()},
            svag={int(lv): {o: Comparison.from_dict(c) for o, c in comps.items()} for lv, comps in d["svag"].items()},
            svag_converged=None if sc is None else {o: Comparison.from_dict(c) for o, c in sc.items()},
            rungs={label: tuple(Level.from_dict(x) for x in levels) for label, levels in d["rungs"].items()},
            verdicts={o: Verdict.from_dict(v) for o, v in d["verdicts"].items()},
            diverged={k: int(v) for k, v in d["diverged"].items()},
            compiles=int(d["compiles"]),
            compile_s=float(d["compile_s"]),
            wall_s=float(d["wall_s"]),
            notes=tuple(d.get("notes", ())),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>.json`` atomically (config with the key, provenance); :meth:`load` reads it."""
        return save_result(path, None, to_jsonable(self.to_dict()) | {"provenance": provenance()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Validation:
        _, meta = load_result(path)
        if meta.get("kind") != "Validation":
            raise wrong_kind(path, meta.get("kind"), cls.__name__)
        return cls.from_dict(meta)


# -- validate -----------------------------------------------------------------------------------------------------


def _key_data(key) -> list[int]:
    return np.asarray(jr.key_data(key)).ravel().tolist()


def validate(
    problem: Problem,
    variant: Variant,
    sampler: AbstractSampler,
    *,
    eta: float,
    steps: int,
    num_runs: int,
    key,
    record: Record | Sequence[str] | None = None,
    num_paths: int | None = None,
    rungs: Sequence[Rung] | None = None,
    svag: Sequence[int] = (2, 4, 8),
    max_refine: int = 2,
    tolerance: Tolerance | None = None,
    momentum: Momentum | float | None = None,
    mesh=None,
    dtype=jnp.float32,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Validation:
    """Does an SDE describe ``variant`` on ``problem`` at learning rate ``eta``? (docs/validation.md)

    Makes ``num_runs`` discrete runs of ``steps`` steps, SVAG at each ``l`` of ``svag`` (``num_runs`` runs each; a
    discrete process with the SDE's moments, so its gap is the finite-learning-rate effect) and ``num_paths``
    (default ``num_runs``) Euler-Maruyama paths of every rung (default :func:`ladder`), each at ``dt = eta`` and
    halved (at most ``max_refine`` times) until no gap changes by more than twice its combined standard error. The
    observables of ``record`` (default: the loss at about 10 times) are compared per recorded time by equivalence
    tests against ``tolerance`` (default ``Tolerance()``: 5 % of the scale; DESIGN §3.5), giving a
    :class:`~sde_sam.validation.Verdict` per observable.

    ``key`` decides everything: the discrete runs, SVAG and the paths take its three splits. ``momentum``: the runs
    use it and every rung is the rescaled model (step ``h = eta / (1 - beta)``, order 1); SVAG is skipped. ``mesh``
    spreads runs and paths over devices (as :func:`~sde_sam.run_discrete` and :func:`~sde_sam.simulate`).
    """
    t_start = time.perf_counter()
    log = log or (lambda s: None)
    if isinstance(eta, bool) or not isinstance(eta, (int, float, np.floating)) or not (math.isfinite(eta) and eta > 0):
        raise ValueError(f"`eta` must be a positive finite number, got {eta!r}")
    steps = check_integer("steps", steps)
    num_runs = check_integer("num_runs", num_runs, 2)
    num_paths = num_runs if num_paths is None else check_integer("num_paths", num_paths, 2)
    max_refine = check_integer("max_refine", max_refine, 0)
    svag = tuple(check_integer("svag", lv, 2) for lv in svag)
    if len(set(svag)) != len(svag):
        raise ValueError(f"`svag` must not repeat a value, got {svag}")
    tolerance = Tolerance() if tolerance is None else tolerance
    if not isinstance(tolerance, Tolerance):
        raise TypeError(f"`tolerance` must be a sde_sam.validation.Tolerance, got {type(tolerance).__name__}")
    record = observables("loss", every=_default_every(steps)) if record is None else as_record(record)
    if steps % record.every:
        raise ValueError(f"`steps`={steps} must be a multiple of the record's `every`={record.every}")
    momentum = as_momentum(momentum)
    rungs = ladder(variant, momentum=momentum) if rungs is None else tuple(rungs)
    if not rungs:
        raise ValueError("`rungs` is empty: give at least one Rung the variant supports")
    for r in rungs:
        if not isinstance(r, Rung):
            raise TypeError(f"`rungs` must hold sde_sam.validation.Rung objects, got {type(r).__name__}")
        if not r.supports(variant, momentum):
            raise ValueError(
                f"rung {r.label} is not defined for variant {variant.name!r}"
                + (" with momentum" if momentum is not None and r.order == 2 else "")
            )
    notes = []
    if momentum is not None and svag:
        notes.append("SVAG of a momentum method is not defined here: skipped")
        svag = ()
    # every model first: sde_model checks each rung before any run is made
    models = {
        r.label: sde_model(
            problem,
            variant,
            sampler,
            eta=eta,
            drift=r.drift,
            diffusion=r.diffusion,
            order=r.order,
            momentum=momentum,
            dtype=dtype,
        )
        for r in rungs
    }
    if len(models) != len(rungs):
        raise ValueError("`rungs` holds two rungs with the same label")
    record.bind(problem, variant, sampler).check(problem)  # as the runs will bind it (m, the rule, the sampler)
    k_disc, k_svag, k_sde = jr.split(key, 3)

    def runs_of(key, svag_l=1):  # the discrete runs (svag_l = 1) or SVAG at l = svag_l
        return run_discrete(
            problem,
            variant,
            sampler,
            eta=eta,
            steps=steps,
            num_runs=num_runs,
            key=key,
            record=record,
            svag=svag_l,
            momentum=momentum if svag_l == 1 else None,
            mesh=mesh,
            dtype=dtype,
            progress=progress,
        )

    with counting() as compiled:
        runs = runs_of(k_disc)
        names = record.names
        disc = {o: np.asarray(runs.values[o], np.float64) for o in names}
        discrete = {}
        for o in names:
            m, s = _mean_se(disc[o])
            discrete[o] = {"mean": m, "stderr": s}
        tau = {o: tolerance.tau(o, discrete[o]["mean"]) for o in names}
        z = tolerance.z_alpha
        diverged = {"discrete": runs.num_diverged}
        log(f"discrete: {num_runs} runs, {runs.num_diverged} diverged")

        svag_out: dict[int, dict[str, Comparison]] = {}
        svag_runs: dict[int, Runs] = {}
        for l in svag:  # noqa: E741
            sv = runs_of(jr.fold_in(k_svag, l), l)
            svag_runs[l] = sv
            svag_out[l] = {o: _compare(f"SVAG l={l}", sv.values[o], disc[o], tau[o], z, num_runs) for o in names}
            diverged[f"SVAG l={l}"] = sv.num_diverged
            log(f"SVAG l={l}: " + ", ".join(f"{o} {svag_out[l][o].agreement.value}" for o in names))
        svag_converged = None
        if len(svag) >= 2:
            hi, lo = sorted(svag)[-1], sorted(svag)[-2]
            svag_converged = {
                o: _compare(
                    f"SVAG l={lo} vs l={hi}", svag_runs[lo].values[o], svag_runs[hi].values[o], tau[o], z, num_runs
                )
                for o in names
            }

        out_rungs: dict[str, tuple[Level, ...]] = {}
        for r in rungs:
            model = models[r.label]
            h = float(model.eta)
            levels: list[Level] = []
            for i in range(max_refine + 1):
                refine = 2**i
                paths = simulate(
                    model,
                    t1=steps * h,
                    dt=h / refine,
                    num_paths=num_paths,
                    key=k_sde,
                    record=dataclasses.replace(record, every=record.every * refine),
                    mesh=mesh,
                    progress=progress,
                )
                comps = {
                    o: _compare(r.label, paths.values[o], disc[o], tau[o], z, min(num_runs, num_paths)) for o in names
                }
                levels.append(Level(refine, h / refine, comps, paths.num_diverged))
                log(f"{r.label} dt=h/{refine}: " + ", ".join(f"{o} {comps[o].agreement.value}" for o in names))
                if len(levels) >= 2 and _converged(levels[-2], levels[-1]):
                    break
            out_rungs[r.label] = tuple(levels)
            diverged[r.label] = levels[-1].diverged

    verdicts = {}
    top = max(svag) if svag else None
    for o in names:
        verdicts[o] = verdict_of(
            [levels[-1].comparisons[o] for levels in out_rungs.values()],
            None if top is None else svag_out[top][o],
            None if svag_converged is None else svag_converged[o],
        )
    config = {
        "problem": problem.name,
        "variant": variant.config(),
        "sampler": type(sampler).__name__,
        "batch_size": int(sampler.batch_size),
        "eta": float(eta),
        "steps": steps,
        "num_runs": num_runs,
        "num_paths": num_paths,
        "record": list(record.names),
        "every": record.every,
        "svag": list(svag),
        "max_refine": max_refine,
        "rungs": [r.label for r in rungs],
        "tolerance": tolerance.config(),
        "momentum": None if momentum is None else momentum.config(),
        "dtype": jnp.dtype(dtype).name,
        "key": _key_data(key),
        "devices": 1 if mesh is None else int(mesh.devices.size),
    }
    return Validation(
        config=config,
        times=np.asarray(runs.times, np.float64),
        discrete=discrete,
        tau=tau,
        svag=svag_out,
        svag_converged=svag_converged,
        rungs=out_rungs,
        verdicts=verdicts,
        diverged=diverged,
        compiles=compiled.count,
        compile_s=compiled.seconds,
        wall_s=time.perf_counter() - t_start,
        notes=tuple(notes),
    )


def _converged(a: Level, b: Level) -> bool:
    """No observable's gap changed by more than twice the combined standard error at any recorded time."""
    for o, ca in a.comparisons.items():
        cb = b.comparisons[o]
        change = np.abs(cb.gap - ca.gap)
        if np.any(~np.isfinite(change)) or np.any(change > 2 * np.hypot(ca.stderr, cb.stderr)):
            return False
    return True
