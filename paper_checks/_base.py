"""Shared pieces of the paper checks: a row (measured, expected, tolerance, PASS/FAIL) and a check result."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Row:
    """One comparison: ``measured`` against ``expected`` within ``tolerance`` (all as short strings)."""

    what: str
    measured: str
    expected: str
    tolerance: str
    passed: bool
    #: False for a comparison this device cannot make (reported "N/A", never a FAIL, not counted either way).
    applicable: bool = True
    #: True where the runs cannot tell (no power): reported "INCONCLUSIVE", never a FAIL; the check cannot PASS.
    inconclusive: bool = False

    @property
    def status(self) -> str:
        if not self.applicable:
            return "N/A"
        if self.inconclusive:
            return "INCONCLUSIVE"
        return "PASS" if self.passed else "FAIL"


@dataclasses.dataclass(frozen=True)
class CheckResult:
    id: str
    claim: str
    rows: tuple[Row, ...]
    note: str = ""

    @property
    def passed(self) -> bool:
        rows = [r for r in self.rows if r.applicable]
        return bool(rows) and all(r.passed and not r.inconclusive for r in rows)

    @property
    def status(self) -> str:
        """FAIL when a row fails; else INCONCLUSIVE when a row cannot tell; else PASS."""
        rows = [r for r in self.rows if r.applicable]
        if any(not r.passed and not r.inconclusive for r in rows):
            return "FAIL"
        return "INCONCLUSIVE" if any(r.inconclusive for r in rows) else "PASS" if rows else "FAIL"

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "claim": self.claim,
            "status": self.status,
            "note": self.note,
            "rows": [dataclasses.asdict(r) | {"status": r.status} for r in self.rows],
        }

    def format(self) -> str:
        lines = [f"[{self.status}] {self.id}: {self.claim}"]
        for r in self.rows:
            lines.append(
                f"    {r.status:4s}  {r.what}: measured {r.measured}; expected {r.expected} (tolerance {r.tolerance})"
            )
        if self.note:
            lines.append(f"    note: {self.note}")
        return "\n".join(lines)


def close(measured: float, expected: float, tol: float) -> bool:
    return math.isfinite(measured) and abs(measured - expected) <= tol


def fmt(x: float, se: float | None = None, digits: int = 4) -> str:
    s = f"{x:.{digits}g}"
    return s if se is None else f"{s} ± {se:.2g}"
