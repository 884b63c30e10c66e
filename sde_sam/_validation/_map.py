"""Where does the SDE hold? :func:`validity_map`: :func:`~sde_sam.validate` over a grid of ``eta``, ``rho``
and ``m`` (docs/validation.md, "Validity maps"; DESIGN §3.5).

``eta`` and ``rho`` are traced values of the compiled programs, so the grid compiles the programs of its first point
and no more for further ``eta`` and ``rho`` (each ``m`` is a program of its own). Every point uses the same ``key``
(common random numbers: neighbouring points differ by their hyperparameters, not by their noise). With ``out`` the
map is saved after every point and a rerun with the same configuration resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._compiles import counting
from .._io import (
    CorruptResult,
    from_jsonable,
    load_result,
    provenance,
    quarantine,
    result_paths,
    save_result,
    to_jsonable,
    wrong_kind,
)
from .._problems._problem import Problem
from .._problems._sampler import AbstractSampler
from .._training._momentum import as_momentum
from .._variants._variant import Variant
from ._validate import Validation, _key_data, ladder, validate
from ._verdict import Agreement, VerdictKind

#: One letter per verdict in the printed map.
_CODE = {VerdictKind.TRACKED: "T", VerdictKind.OUTSIDE: "O", VerdictKind.MODEL_GAP: "G", VerdictKind.INCONCLUSIVE: "?"}


def _values(name: str, values, *, allow_zero: bool = False) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in values)
    except TypeError as err:
        raise TypeError(f"`{name}` must be a sequence of numbers, got {values!r}") from err
    if not vals:
        raise ValueError(f"`{name}` is empty: give at least one value")
    for v in vals:
        if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
            raise ValueError(f"`{name}` must hold finite numbers {'>= 0' if allow_zero else '> 0'}, got {v!r}")
    if len(set(vals)) != len(vals):
        raise ValueError(f"`{name}` must not repeat a value, got {vals}")
    return vals


def _with(variant: Variant, rho: float, m: int | None) -> Variant:
    """``variant`` at ``rho`` (and micro-batch size ``m``)."""
    v = dataclasses.replace(variant, rho=rho)
    if m is not None:
        v = dataclasses.replace(v, rule=dataclasses.replace(v.rule, micro_batch_size=m))  # pyright: ignore[reportArgumentType]
    return v


@dataclasses.dataclass(frozen=True)
class ValidityMap:
    """:func:`validity_map`'s result: the :class:`~sde_sam.Validation` of every grid point, in the order
    ``ms x rhos x etas``, with the compile count and time of the whole map. ``print(map)`` shows the verdict grids;
    :meth:`plot` draws them with the boundaries of the SDE regime and of tracking."""

    config: dict
    etas: tuple[float, ...]
    rhos: tuple[float, ...]
    ms: tuple[int | None, ...]
    points: dict[tuple[float, float, int | None], Validation]
    compiles: int
    compile_s: float
    wall_s: float

    @property
    def observables(self) -> tuple[str, ...]:
        return next(iter(self.points.values())).observables

    def at(self, eta: float, rho: float, m: int | None = None) -> Validation:
        return self.points[(float(eta), float(rho), m)]

    def grid(self, observable: str, what: Callable[[Validation], Any]) -> np.ndarray:
        """``what(validation)`` at every point: an array ``(len(ms), len(rhos), len(etas))``."""
        out = np.empty((len(self.ms), len(self.rhos), len(self.etas)), dtype=object)
        for i, m in enumerate(self.ms):
            for j, rho in enumerate(self.rhos):
                for k, eta in enumerate(self.etas):
                    out[i, j, k] = what(self.points[(eta, rho, m)])
        return out

    def verdicts(self, observable: str) -> np.ndarray:
        """The :class:`~sde_sam.validation.VerdictKind` at every point (``ms x rhos x etas``)."""
        return self.grid(observable, lambda v: v.verdicts[observable].kind)

    def regime(self, observable: str) -> np.ndarray:
        """SVAG's :class:`~sde_sam.validation.Agreement` (largest ``l``) at every point; ``None`` without SVAG."""
        return self.grid(observable, lambda v: v.svag[max(v.svag)][observable].agreement if v.svag else None)

    def boundary(self, observable: str) -> dict:
        """Per ``(m, rho)``: the smallest ``eta`` at which SVAG departs (the edge of the SDE regime) and the smallest
        at which the verdict is no longer *tracked* (the edge of tracking); ``None`` where that never happens."""
        reg, ver = self.regime(observable), self.verdicts(observable)
        out = {}
        for i, m in enumerate(self.ms):
            for j, rho in enumerate(self.rhos):
                leaves = [eta for k, eta in enumerate(self.etas) if reg[i, j, k] is Agreement.DEPARTS]
                stops = [eta for k, eta in enumerate(self.etas) if ver[i, j, k] is not VerdictKind.TRACKED]
                out[(rho, m)] = {
                    "regime_ends_at_eta": min(leaves, default=None),
                    "tracking_ends_at_eta": min(stops, default=None),
                }
        return out

    def __str__(self) -> str:
        c = self.config
        lines = [
            f"Validity map of {c['variant']['name']} on {c['problem']}: {len(self.points)} points, "
            f"{self.compiles} programs compiled ({self.compile_s:.1f} s of compiling), {c['steps']} steps, "
            f"{c['num_runs']} runs per point",
            "T tracked by the rung named, O outside the SDE regime (SVAG departs), G model gap, ? inconclusive",
        ]
        for o in self.observables:
            for m in self.ms:
                lines += [
                    "",
                    f"{o}" + ("" if m is None else f", m = {m}") + ":",
                    "",
                    "| rho \\ eta | " + " | ".join(f"{e:g}" for e in self.etas) + " |",
                    "|---|" + "---|" * len(self.etas),
                ]
                for rho in self.rhos:
                    cells = []
                    for eta in self.etas:
                        v = self.points[(eta, rho, m)].verdicts[o]
                        cells.append(_CODE[v.kind] + (f" {v.rung}" if v.kind is VerdictKind.TRACKED else ""))
                    lines.append(f"| {rho:g} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def plot(self, observable: str | None = None):
        """Heatmaps over ``(eta, rho)``, one per ``m``: the verdict at each point, with the boundary of the SDE regime
        (SVAG departs beyond it) and of tracking drawn between cells. Returns the figure."""
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap

        o = observable or self.observables[0]
        kinds = list(_CODE)
        ver = self.verdicts(o)
        reg = self.regime(o)
        fig, axes = plt.subplots(
            1, len(self.ms), figsize=(1.2 + 1.1 * len(self.etas) * len(self.ms), 3.2), squeeze=False
        )
        cmap = ListedColormap(["#4c9a2a", "#d95f02", "#7570b3", "#bbbbbb"])
        for i, (ax, m) in enumerate(zip(axes[0], self.ms, strict=True)):
            img = np.vectorize(kinds.index)(ver[i]).astype(float)
            ax.imshow(img, cmap=cmap, vmin=-0.5, vmax=3.5, origin="lower", aspect="auto")
            for j in range(len(self.rhos)):
                for k in range(len(self.etas)):
                    ax.text(k, j, _CODE[ver[i, j, k]], ha="center", va="center", fontsize=8)
            for grid, style in (
                (np.vectorize(lambda a: a is Agreement.DEPARTS)(reg[i]), "-"),
                (np.vectorize(lambda a: a is not VerdictKind.TRACKED)(ver[i]), "--"),
            ):
                _edges(ax, grid.astype(bool), style)
            ax.set_xticks(range(len(self.etas)), [f"{e:g}" for e in self.etas])
            ax.set_yticks(range(len(self.rhos)), [f"{r:g}" for r in self.rhos])
            ax.set_xlabel("eta")
            ax.set_ylabel("rho")
            ax.set_title(f"{o}" + ("" if m is None else f", m = {m}") + "\n— regime edge, -- tracking edge", fontsize=8)
        fig.tight_layout()
        return fig

    # -- storage --------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "kind": "ValidityMap",
            "config": self.config,
            "etas": list(self.etas),
            "rhos": list(self.rhos),
            "ms": list(self.ms),
            "points": [{"eta": e, "rho": r, "m": m, "validation": v.to_dict()} for (e, r, m), v in self.points.items()],
            "compiles": self.compiles,
            "compile_s": self.compile_s,
            "wall_s": self.wall_s,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ValidityMap:
        points = {
            (float(p["eta"]), float(p["rho"]), p["m"]): Validation.from_dict(p["validation"]) for p in d["points"]
        }
        return cls(
            d["config"],
            tuple(d["etas"]),
            tuple(d["rhos"]),
            tuple(d["ms"]),
            points,
            int(d["compiles"]),
            float(d["compile_s"]),
            float(d["wall_s"]),
        )

    def save(self, path: str | os.PathLike) -> Path:
        return save_result(path, None, to_jsonable(self.to_dict()) | {"provenance": provenance()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> ValidityMap:
        _, meta = load_result(path)
        if meta.get("kind") != "ValidityMap":
            raise wrong_kind(path, meta.get("kind"), cls.__name__)
        return cls.from_dict(from_jsonable(meta))


def _edges(ax, mask: np.ndarray, style: str) -> None:
    """Lines between cells where ``mask`` changes (a boundary on an image drawn with ``imshow``)."""
    rows, cols = mask.shape
    for j in range(rows):
        for k in range(cols):
            if k + 1 < cols and mask[j, k] != mask[j, k + 1]:
                ax.plot([k + 0.5, k + 0.5], [j - 0.5, j + 0.5], "k" + style, lw=1.5)
            if j + 1 < rows and mask[j, k] != mask[j + 1, k]:
                ax.plot([k - 0.5, k + 0.5], [j + 0.5, j + 0.5], "k" + style, lw=1.5)


def validity_map(
    problem: Problem,
    variant: Variant,
    sampler: AbstractSampler,
    *,
    etas: Sequence[float],
    rhos: Sequence[float] | None = None,
    ms: Sequence[int | None] | None = None,
    steps: int,
    num_runs: int,
    key,
    out: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
    **options,
) -> ValidityMap:
    """:func:`~sde_sam.validate` at every ``(eta, rho, m)`` of the grid (docs/validation.md).

    Monte Carlo drifts are sized (``num_samples=None``) once per ``m``, at the largest ``rho``, and that size is used
    at every point. ``rhos`` default ``(variant.rho,)``; ``ms`` (micro-batch sizes, for rules with
    ``micro_batch_size``: m-SAM,
    m-USAM; ``None`` is the whole batch) default the variant's own. ``options`` go to ``validate`` (``record``,
    ``num_paths``, ``rungs``, ``svag``, ``max_refine``, ``tolerance``, ``momentum``, ``mesh``, ``dtype``,
    ``progress``). ``out``: saved there after every point; a rerun with the same configuration reuses the points
    it finds there.
    """
    t0 = time.perf_counter()
    log = log or (lambda s: None)
    etas = _values("etas", etas)
    rhos = (float(variant.rho),) if rhos is None else _values("rhos", rhos, allow_zero=True)
    if ms is None:
        ms = (getattr(variant.rule, "micro_batch_size", None),)
    else:
        if not hasattr(variant.rule, "micro_batch_size"):
            raise ValueError(
                f"`ms` needs a variant whose rule has a micro-batch size (m-SAM, m-USAM); "
                f"{variant.name!r} has rule {type(variant.rule).__name__}"
            )
        ms = tuple(ms)
        if not ms:
            raise ValueError("`ms` is empty: give at least one micro-batch size (or None for the whole batch)")
    bad = set(options) - {
        "record",
        "num_paths",
        "rungs",
        "svag",
        "max_refine",
        "tolerance",
        "momentum",
        "mesh",
        "dtype",
        "progress",
    }
    if bad:
        raise TypeError(f"validity_map got unexpected option(s) {sorted(bad)}")
    variants = {(rho, m): _with(variant, rho, m) for m in ms for rho in rhos}  # bad m fails here, before any run
    for v in variants.values():
        v.num_micro_batches(sampler.batch_size)  # an m that does not divide the batch size: a clear error now
    # Monte Carlo drifts sized once per m, at the largest rho (the widest spread of the update), so that every point
    # runs the same programs: a size found per point would be a new static number, hence a new program, per rho
    given = options.pop("rungs", None)
    momentum = as_momentum(options.get("momentum"))
    rungs_at = {}
    for m in ms:
        ref = variants[(max(rhos), m)]
        rungs = ladder(ref, momentum=momentum) if given is None else tuple(given)
        rungs_at[m] = tuple(dataclasses.replace(r, drift=r.drift.sized(problem, ref, sampler)[0]) for r in rungs)
    config = {
        "problem": problem.name,
        "variant": variant.config(),
        "sampler": type(sampler).__name__,
        "batch_size": int(sampler.batch_size),
        "etas": list(etas),
        "rhos": list(rhos),
        "ms": list(ms),
        "steps": int(steps),
        "num_runs": int(num_runs),
        "key": _key_data(key),
        "options": {
            k: (v if isinstance(v, (int, float, str, bool, type(None))) else repr(v))
            for k, v in options.items()
            if k not in ("progress", "mesh")
        },
        "rungs": {str(m): [repr(r) for r in rs] for m, rs in rungs_at.items()},
    }
    done = _previous(out, config, log) if out is not None else {}
    points: dict[tuple[float, float, int | None], Validation] = {}
    compiles, compile_s = 0, 0.0
    total = len(etas) * len(rhos) * len(ms)
    with counting() as c:
        for m in ms:
            for rho in rhos:
                for eta in etas:
                    where = (eta, rho, m)
                    if where in done:
                        points[where] = done[where]
                        log(f"point eta={eta:g} rho={rho:g} m={m}: reused")
                        continue
                    points[where] = validate(
                        problem,
                        variants[(rho, m)],
                        sampler,
                        eta=eta,
                        steps=steps,
                        num_runs=num_runs,
                        key=key,
                        rungs=rungs_at[m],
                        **options,
                    )
                    if out is not None:
                        partial = ValidityMap(
                            config, etas, rhos, ms, dict(points), c.count, c.seconds, time.perf_counter() - t0
                        )
                        save_result(
                            out, None, to_jsonable(partial.to_dict()) | {"complete": False, "provenance": provenance()}
                        )
                    log(
                        f"point {len(points)}/{total} eta={eta:g} rho={rho:g} m={m}: "
                        + "; ".join(f"{o} {v.kind.value}" for o, v in points[where].verdicts.items())
                    )
        compiles, compile_s = c.count, c.seconds
    result = ValidityMap(config, etas, rhos, ms, points, compiles, compile_s, time.perf_counter() - t0)
    if out is not None:
        result.save(out)
    return result


def _previous(out, config: dict, log) -> dict:
    """The points of an earlier map with the same configuration at ``out`` (none when there is none)."""
    if not result_paths(out)[0].exists():
        return {}
    try:
        _, meta = load_result(out)
    except CorruptResult as err:
        moved = quarantine(out)
        log(f"{result_paths(out)[0]} unreadable ({err}); starting afresh (kept as {[p.name for p in moved]})")
        return {}
    if meta.get("kind") != "ValidityMap" or meta.get("config") != to_jsonable(config):
        return {}
    return ValidityMap.from_dict(from_jsonable(meta)).points
