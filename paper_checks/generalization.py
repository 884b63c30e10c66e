"""C11: the generalization claim behind m-sharpness, on digits with label noise in the training labels.

The paper's claim: test accuracy does not fall as the micro-batch size ``m`` shrinks (and improves on SAM at
small ``m``); RW-SAM matches small-m m-SAM; the gains over SAM are larger under label noise. Differences between
two variants use the per-seed values paired by seed (same seeds, so the same initial point and batch order) and
their standard error over seeds; a claim holds when its z-score clears 2.

Read over its power (DESIGN §3.5): a claim "difference > 0" holds when ``z > 2``, FAILs when the difference is
reversed (``z < -2``), and is INCONCLUSIVE in between, with about how many seeds would decide it. A model whose SGD
run does not fit its training set (final train accuracy below :data:`UNDERTRAINED` at the lowest label noise) cannot
test the claim at all: its rows are INCONCLUSIVE (the differences then measure how fast each variant trains).
"""

# pyright: reportTypedDictNotRequiredAccess=false

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from sde_sam import mean_stderr
from stage_types import GeneralizationModel, MeanStderr, Results

from ._base import CheckResult, Row, fmt

ID, STAGES = "C11", ("generalization",)
CLAIM = (
    "test accuracy does not fall as m shrinks, RW-SAM matches small-m m-SAM, and the gains over SAM grow "
    "with label noise"
)
Z = 2.0
#: A final train accuracy of SGD below this marks an undertrained comparison in the note (the quick preset).
UNDERTRAINED = 0.9


def _diff(a: MeanStderr, b: MeanStderr) -> tuple[float, float]:
    """``a - b`` of the final test accuracy with its standard error: paired over seeds when both have every seed,
    else the two standard errors in quadrature."""
    x, y = np.asarray(a["per_seed"], float), np.asarray(b["per_seed"], float)
    if len(x) == len(y) and len(x) > 1:
        mean, stderr = mean_stderr(x - y)
        return float(mean), float(stderr)
    return a["mean"] - b["mean"], math.hypot(a["stderr"], b["stderr"])


def _z(d: float, se: float) -> float:
    return d / se if se > 0 else (math.inf if d > 0 else -math.inf if d < 0 else 0.0)


def _m_rows(rows: dict) -> list[tuple[int, str]]:
    """``(m, label)`` from SAM (m = B, first) down to the smallest m."""
    ms = sorted(((int(k.split("=")[1].rstrip(")")), k) for k in rows if k.startswith("m-SAM (m=")), reverse=True)
    return [(10**9, "SAM"), *ms]


def _positive(what: str, d: float, se: float, seeds: int) -> Row:
    """The claim ``d > 0``: holds at ``z > Z``, FAILs at ``z < -Z``, else INCONCLUSIVE with the seeds that would
    decide it (``n (Z / z)^2``, the standard error shrinking as ``1 / sqrt(n)``)."""
    z = _z(d, se)
    power = (
        ""
        if abs(z) > Z
        else (
            f"; about {math.ceil(seeds * (Z / abs(z)) ** 2)} seeds would decide it"
            if z != 0
            else "; no difference at all"
        )
    )
    return Row(
        what,
        f"{fmt(d, se)} (z {z:+.1f}){power}",
        "> 0",
        f"z > {Z:g} holds, z < -{Z:g} fails",
        z > Z,
        inconclusive=-Z <= z <= Z,
    )


def _model_rows(name: str, res: GeneralizationModel) -> tuple[list[Row], list[str]]:
    tag = f"{name}{' (short CPU run; a GPU settles it)' if res.get('gpu_settles') else ''}"
    out, notes, gains = [], [], {}
    lowest = min(res["rows"], key=float)
    sgd_train = res["rows"][lowest].get("SGD", {}).get("accuracy_final", {}).get("mean")
    undertrained = sgd_train is not None and sgd_train < UNDERTRAINED
    chain, seeds = [], 2
    for p, rows in res["rows"].items():
        acc = {k: v["test_accuracy_final"] for k, v in rows.items()}
        chain = _m_rows(rows)
        steps = []
        for (_, big), (_, small) in itertools.pairwise(chain):
            d, se = _diff(acc[small], acc[big])
            steps.append((f"{small.replace('m-SAM ', '')} vs {big.replace('m-SAM ', '')}", d, se, _z(d, se)))
        worst = min(steps, key=lambda s: s[3])
        out.append(
            Row(
                f"[{tag}, label noise {float(p):g}] test accuracy as m shrinks (worst adjacent step: {worst[0]})",
                f"{fmt(worst[1], worst[2])} (z {worst[3]:+.1f})",
                ">= 0",
                f"no step below -{Z:g} s.e.",
                worst[3] >= -Z,
            )
        )
        smallest = chain[-1][1]
        d, se = _diff(acc[smallest], acc["SAM"])
        gains.setdefault("small", {})[p] = (d, se)
        seeds = len(acc["SAM"].get("per_seed", [])) or 2
        out.append(_positive(f"[{tag}, label noise {float(p):g}] {smallest} - SAM test accuracy", d, se, seeds))
        best = max((k for _, k in chain[1:]), key=lambda k: acc[k]["mean"])
        d, se = _diff(acc["RW-SAM"], acc[best])
        out.append(
            Row(
                f"[{tag}, label noise {float(p):g}] RW-SAM - best small-m m-SAM ({best}) test accuracy",
                f"{fmt(d, se)} (z {_z(d, se):+.1f})",
                "0",
                f"|z| <= {Z:g}",
                abs(_z(d, se)) <= Z,
            )
        )
        gains.setdefault("RW-SAM", {})[p] = _diff(acc["RW-SAM"], acc["SAM"])
        notes.append(
            f"{name}, noise {float(p):g}: "
            + ", ".join(f"{k} {v['mean']:.3f}±{v['stderr']:.3f}" for k, v in acc.items())
        )
        train_acc = rows["SGD"].get("accuracy_final", {}).get("mean")
        if train_acc is not None and train_acc < UNDERTRAINED and float(p) == min(map(float, res["rows"])):
            notes.append(
                f"{name}, noise {float(p):g}: SGD's final train accuracy is {train_acc:.3f} (< "
                f"{UNDERTRAINED:g}): the runs stop far from fitting the training set, so the differences "
                "measure how fast each variant trains more than how it generalizes"
            )
    levels = sorted(res["rows"], key=float)
    if len(levels) > 1:
        lo, hi = levels[0], levels[-1]
        for who, label in (("small", chain[-1][1]), ("RW-SAM", "RW-SAM")):
            (g0, s0), (g1, s1) = gains[who][lo], gains[who][hi]
            d, se = g1 - g0, math.hypot(s0, s1)
            row = _positive(
                f"[{tag}] gain of {label} over SAM: label noise {float(hi):g} minus {float(lo):g}", d, se, seeds
            )
            out.append(dataclasses.replace(row, measured=f"{row.measured}; gains {g1:+.4f} vs {g0:+.4f}"))
    if undertrained:  # the claim is about generalization; these runs have not fitted their training set
        why = f" (INCONCLUSIVE: SGD's final train accuracy {sgd_train:.3f} < {UNDERTRAINED:g}, undertrained)"
        out = [dataclasses.replace(r, what=r.what + why, inconclusive=True) for r in out]
    return out, notes


def evaluate(results: Results) -> CheckResult:
    d = results["generalization"]
    rows, notes = [], []
    for name, res in d["models"].items():
        r, n = _model_rows(name, res)
        rows += r
        notes += n
        cal = res.get("rw_calibration", {})
        if cal:
            first = next(iter(cal.values()))
            notes.append(
                f"{name}: RW-SAM {first['score']}, {first['reading']}, lambda for ESS "
                f"{100 * first['ess']:g}% of B at init: "
                + ", ".join(f"{float(p):g}: {c['lambda']:.3g}" for p, c in cal.items())
            )
    note = "final test accuracy, mean ± s.e. over seeds, differences paired by seed. " + "; ".join(notes)
    return CheckResult(ID, CLAIM, tuple(rows), note)
