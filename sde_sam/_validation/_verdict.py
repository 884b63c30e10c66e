"""Verdicts by equivalence tests (docs/validation.md, "Verdicts"; DESIGN §3.5). Numpy only.

A model's gap on an observable ``phi`` at a recorded time is ``Delta = E phi(model) - E phi(discrete)`` with standard
error ``s`` (both ensembles' in quadrature). Against a tolerance ``tau``, with ``z_a`` the one-sided normal quantile
(1.645: two one-sided tests at 5 % each, a 90 % interval):

* **tracks** when ``|Delta| + z_a s <= tau`` (the interval lies inside ``[-tau, tau]``);
* **departs** when ``|Delta| - z_a s > tau`` (it lies outside);
* otherwise **inconclusive**, decided by about ``R (z_a s / (tau - |Delta|))^2`` runs (``R`` the runs made).

Over the recorded times a model tracks when it tracks at every time, departs when it departs at some time, and is
inconclusive otherwise. More runs shrink ``s`` only, so a gap inside ``tau`` is never turned into *departs*.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping

import numpy as np


class Agreement(enum.Enum):
    """The outcome of one equivalence test."""

    TRACKS = "tracks"
    DEPARTS = "departs"
    INCONCLUSIVE = "inconclusive"


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """``tau = relative * scale(phi)`` (docs/validation.md, "Tolerance").

    ``scale(phi) = max(max_t |E phi_t - E phi_0|, level * max_t |E phi_t|)`` over the discrete runs' means: the
    observable's change over the run, or a share ``level`` of its size where it hardly changes. ``absolute``:
    ``{observable: tau}`` set by hand, used as given. ``z_alpha``: the one-sided normal quantile of the tests.
    """

    relative: float = 0.05
    level: float = 0.1
    absolute: Mapping[str, float] = dataclasses.field(default_factory=dict)
    z_alpha: float = 1.645

    def __post_init__(self):
        for name in ("relative", "level", "z_alpha"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"Tolerance `{name}` must be a positive finite number, got {v!r}")
        for obs, v in dict(self.absolute).items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"Tolerance `absolute[{obs!r}]` must be a finite number >= 0, got {v!r}")

    def scale(self, discrete_mean: np.ndarray) -> float:
        m = np.asarray(discrete_mean, np.float64)
        m = m[np.isfinite(m)]
        if m.size == 0:
            return math.nan
        return float(max(np.max(np.abs(m - m[0])), self.level * np.max(np.abs(m))))

    def tau(self, observable: str, discrete_mean: np.ndarray) -> float:
        if observable in self.absolute:
            return float(self.absolute[observable])
        return self.relative * self.scale(discrete_mean)

    def config(self) -> dict:
        return {
            "relative": self.relative,
            "level": self.level,
            "absolute": dict(self.absolute),
            "z_alpha": self.z_alpha,
        }


def agreement(gap: np.ndarray, stderr: np.ndarray, tau: float, z_alpha: float) -> np.ndarray:
    """Per recorded time: an array of :class:`Agreement` values (object array), NaN gaps inconclusive."""
    gap, stderr = np.abs(np.asarray(gap, np.float64)), np.asarray(stderr, np.float64)
    out = np.full(gap.shape, Agreement.INCONCLUSIVE, dtype=object)
    ok = np.isfinite(gap) & np.isfinite(stderr)
    out[ok & (gap + z_alpha * stderr <= tau)] = Agreement.TRACKS
    out[ok & (gap - z_alpha * stderr > tau)] = Agreement.DEPARTS
    return out


def overall(per_time: np.ndarray) -> Agreement:
    """Tracks at every time: tracks; departs at some time: departs; else inconclusive."""
    if any(a is Agreement.DEPARTS for a in per_time):
        return Agreement.DEPARTS
    if all(a is Agreement.TRACKS for a in per_time):
        return Agreement.TRACKS
    return Agreement.INCONCLUSIVE


def runs_to_decide(gap: np.ndarray, stderr: np.ndarray, tau: float, z_alpha: float, runs: int) -> float:
    """About how many runs (both ensembles scaled alike) would turn every inconclusive time into tracks or departs:
    ``R (z_a s / |tau - |Delta||)^2``, the largest over those times; ``inf`` where ``|Delta| = tau``."""
    gap, stderr = np.abs(np.asarray(gap, np.float64)), np.asarray(stderr, np.float64)
    per = agreement(gap, stderr, tau, z_alpha)
    need = 0.0
    for g, s, a in zip(gap, stderr, per, strict=True):
        if a is not Agreement.INCONCLUSIVE:
            continue
        margin = abs(tau - g)
        if not (np.isfinite(g) and np.isfinite(s)) or margin == 0:
            return math.inf
        need = max(need, runs * (z_alpha * s / margin) ** 2)
    return float(math.ceil(need)) if need else 0.0


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One model (a rung at its finest ``dt``, or SVAG at ``l``) against a reference ensemble on one observable:
    the gap and its standard error per recorded time, the tolerance, and the tests' outcome."""

    label: str
    gap: np.ndarray
    stderr: np.ndarray
    tau: float
    z_alpha: float
    runs: int

    @property
    def per_time(self) -> np.ndarray:
        return agreement(self.gap, self.stderr, self.tau, self.z_alpha)

    @property
    def agreement(self) -> Agreement:
        return overall(self.per_time)

    @property
    def worst(self) -> int:
        """The recorded index where ``|Delta| / tau`` (``|Delta|`` when ``tau = 0``) is largest."""
        g = np.nan_to_num(np.abs(self.gap), nan=np.inf)
        return int(np.argmax(g / self.tau if self.tau > 0 else g))

    @property
    def z(self) -> float:
        """``Delta / s`` at :attr:`worst`."""
        i = self.worst
        g, s = float(self.gap[i]), float(self.stderr[i])
        return g / s if s > 0 else (0.0 if g == 0 else math.copysign(math.inf, g))

    @property
    def ratio(self) -> float:
        """``max_t |Delta| / tau``: below 1 the gap lies inside the tolerance."""
        g = float(np.abs(self.gap[self.worst]))
        return g / self.tau if self.tau > 0 else (0.0 if g == 0 else math.inf)

    @property
    def runs_to_decide(self) -> float:
        return runs_to_decide(self.gap, self.stderr, self.tau, self.z_alpha, self.runs)

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "gap": np.asarray(self.gap, np.float64).tolist(),
            "stderr": np.asarray(self.stderr, np.float64).tolist(),
            "tau": self.tau,
            "z_alpha": self.z_alpha,
            "runs": self.runs,
            "agreement": self.agreement.value,
            "z": self.z,
            "ratio": self.ratio,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Comparison:
        return cls(
            d["label"],
            np.asarray(d["gap"], np.float64),
            np.asarray(d["stderr"], np.float64),
            float(d["tau"]),
            float(d["z_alpha"]),
            int(d["runs"]),
        )


class VerdictKind(enum.Enum):
    """What a validation concludes for one observable (docs/validation.md, "Verdicts")."""

    TRACKED = "tracked"
    OUTSIDE = "outside the SDE regime"
    MODEL_GAP = "model gap"
    INCONCLUSIVE = "inconclusive"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The verdict on one observable: its kind, the rung it names (tracking, or nearest) and the sentence."""

    kind: VerdictKind
    rung: str | None
    text: str

    def to_dict(self) -> dict:
        return {"kind": self.kind.value, "rung": self.rung, "text": self.text}

    @classmethod
    def from_dict(cls, d: dict) -> Verdict:
        return cls(VerdictKind(d["kind"]), d["rung"], d["text"])


def _fmt_z(z: float) -> str:
    return f"{z:+.1f}" if math.isfinite(z) else ("+inf" if z > 0 else "-inf")


def verdict_of(rungs: list[Comparison], svag: Comparison | None, svag_converged: Comparison | None = None) -> Verdict:
    """The verdict from the rungs' comparisons and SVAG's (the largest ``l`` against the discrete runs;
    ``svag_converged``: the next largest against it, which says whether SVAG has reached its limit).

    1. A rung tracks: *tracked by <rung>* (the tracking rung with the smallest ``max_t |Delta| / tau``).
    2. SVAG departs: *outside the SDE regime*: no SDE can close a gap that SVAG, a discrete process with the SDE's
       moments, already shows.
    3. SVAG tracks and every rung departs: *model gap*, naming the nearest rung.
    4. Otherwise *inconclusive*, with the runs that would decide it.
    """
    tracking = [c for c in rungs if c.agreement is Agreement.TRACKS]
    if tracking:
        best = min(tracking, key=lambda c: c.ratio)
        return Verdict(
            VerdictKind.TRACKED,
            best.label,
            f"tracked by {best.label} (|gap| <= {best.ratio:.2f} tau, z = {_fmt_z(best.z)})",
        )
    nearest = min(rungs, key=lambda c: c.ratio) if rungs else None
    near = "" if nearest is None else f"; nearest {nearest.label}, z = {_fmt_z(nearest.z)}"
    note = ""
    if svag_converged is not None and svag_converged.agreement is Agreement.DEPARTS:
        note = f"; SVAG has not converged ({svag_converged.label} departs)"
    if svag is not None and svag.agreement is Agreement.DEPARTS:
        return Verdict(
            VerdictKind.OUTSIDE,
            None if nearest is None else nearest.label,
            f"outside the SDE regime ({svag.label} departs, z = {_fmt_z(svag.z)}{note})",
        )
    all_depart = bool(rungs) and all(c.agreement is Agreement.DEPARTS for c in rungs)
    if svag is not None and svag.agreement is Agreement.TRACKS and all_depart:
        return Verdict(
            VerdictKind.MODEL_GAP,
            nearest.label if nearest else None,
            f"model gap ({svag.label} tracks, no rung does{near})",
        )
    undecided = [c for c in rungs + ([svag] if svag is not None else []) if c.agreement is Agreement.INCONCLUSIVE]
    if undecided:
        need = max(c.runs_to_decide for c in undecided)
        runs = "an unbounded number of" if not math.isfinite(need) else f"about {int(need)}"
        why = ", ".join(f"{c.label} s.e. {float(np.nanmax(c.stderr)):.3g} vs tau {c.tau:.3g}" for c in undecided[:3])
        return Verdict(
            VerdictKind.INCONCLUSIVE,
            nearest.label if nearest else None,
            f"inconclusive (s.e. too large: {why}; {runs} runs would decide it{near})",
        )
    why = "no SVAG to tell the regime from the model" if svag is None else "no rung tracks"
    return Verdict(
        VerdictKind.INCONCLUSIVE, nearest.label if nearest else None, f"inconclusive (every rung departs, {why}{near})"
    )
