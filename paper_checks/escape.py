"""C5: smaller m leaves the sharp basin sooner, and which SDE reproduces that, read over its regime.

With a map in the record (``escape.map``: ``eta`` x ``rho lambda_sharp`` x m, DESIGN §3.5) the claim is read where
the first-order theory it comes from applies, ``rho lambda_sharp <= theory_rho_lambda`` (0.5: the ascent step
stays well inside the basin's quadratic region): at every point each pair ``m < m'`` is *holds* (m leaves sooner,
z >= 3), *reversed* (z <= -3) or *cannot tell*. The check FAILs when a pair is reversed inside that region; it
reports where the ordering breaks outside it, and whether the map's SDE reproduces the discrete differences. Where
the runs cannot tell anywhere inside the region the check is INCONCLUSIVE (no power), never FAIL. The single point
below (``rho``, ``eta`` of the stage) is then read as one more point of the map.

Measured against the problem's true barrier (``sde_sam.problems.sharp_flat_barrier``): the time-averaged fraction
of runs past it (the area under the F1 curves; larger = left sooner). The discrete rows test the claim: m = 1
leaves sooner than m = B (above 2 s.e.) and no adjacent pair is inverted beyond 2 s.e. The model rows ask
whether an SDE reproduces the discrete ordering: for each adjacent pair of m, the model's difference agrees
with the discrete difference within 2 combined s.e. The check passes when the discrete claim holds and the best
model of the ladder (smallest sum of squared z over the pairs) reproduces every pair; it names that model.
"""

# pyright: reportTypedDictNotRequiredAccess=false

import itertools
import math

from stage_types import EscapeData, EscapeMapData, EscapeStats, Results

from ._base import CheckResult, Row, fmt

ID, STAGES, Z, Z_MAP = "C5", ("escape",), 2.0, 3.0
CLAIM = "smaller m leaves the sharp basin sooner (discrete), and the best SDE of the ladder reproduces it"


def _diff(a: EscapeStats, b: EscapeStats) -> tuple[float, float]:
    return a["time_avg"] - b["time_avg"], math.hypot(a["time_avg_stderr"], b["time_avg_stderr"])


def _pairs(rows: dict) -> list:
    ms = sorted(rows.values(), key=lambda r: r["m"])
    return [*itertools.pairwise(ms), (ms[0], ms[-1])] if len(ms) > 2 else list(itertools.pairwise(ms))


def _read(diff: float, se: float) -> str:
    z = diff / se if se > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    return "holds" if z >= Z_MAP else "reversed" if z <= -Z_MAP else "cannot tell"


def evaluate_map(d: EscapeData | EscapeMapData) -> CheckResult:
    """C5 read over the map (see the module docstring)."""
    mp = d["map"]
    limit = mp["theory_rho_lambda"]
    inside, outside, reproduced, total = [], [], 0, 0
    for p in mp["points"]:
        for a, b in _pairs(p["rows"]):
            diff, se = _diff(a["discrete"], b["discrete"])
            dm, sm = _diff(a["model"], b["model"])
            total += 1
            reproduced += abs(dm - diff) <= Z_MAP * math.hypot(se, sm)
            entry = (p["eta"], p["rho_lambda"], a["m"], b["m"], diff, se, _read(diff, se))
            (inside if p["rho_lambda"] <= limit else outside).append(entry)

    def show(entries):
        return (
            "; ".join(
                f"eta={e:g} rho*lambda={rl:g} m={ma}-{mb}: {fmt(df, sd)} ({r})" for e, rl, ma, mb, df, sd, r in entries
            )
            or "none"
        )

    reversed_in = [e for e in inside if e[6] == "reversed"]
    holds_in = [e for e in inside if e[6] == "holds"]
    rows = [
        Row(
            f"inside the first-order regime (rho*lambda <= {limit:g}): no pair m < m' reversed",
            show(reversed_in) if reversed_in else f"none of {len(inside)} pairs reversed",
            "none reversed",
            f"z <= -{Z_MAP:g} is reversed",
            not reversed_in,
        ),
        Row(
            f"inside the first-order regime: smaller m leaves sooner somewhere (z >= {Z_MAP:g})",
            f"{len(holds_in)} of {len(inside)} pairs hold, the rest cannot tell",
            ">= 1 pair holds",
            f"z >= {Z_MAP:g}",
            bool(holds_in),
            inconclusive=not holds_in and not reversed_in,
        ),
    ]
    broken = [e for e in outside if e[6] == "reversed"]
    first = min((e[1] for e in broken), default=None)
    rows.append(
        Row(
            "outside the regime (informational): where the ordering breaks",
            (f"reversed from rho*lambda = {first:g}: " + show(broken)) if broken else "nowhere on the map",
            "reported",
            "-",
            True,
        )
    )
    rows.append(
        Row(
            f"the map's SDE ({mp['model']}) reproduces the discrete differences (informational)",
            f"{reproduced} of {total} pair differences within {Z_MAP:g} combined s.e.",
            "reported",
            "-",
            True,
        )
    )
    note = (
        f"{d['problem']}, {d['sampler']} B={d['B']}, lambda_sharp = {mp['sharp_curvature']:g}, "
        f"{mp['num_runs']} runs and {mp.get('num_paths', mp['num_runs'])} paths per point, {mp['steps']} steps; "
        "time-averaged fraction past the barrier. "
        f"Inside the regime: {show(inside)}. Outside: {show(outside)}."
    )
    return CheckResult(ID, CLAIM, tuple(rows), note)


def evaluate(results: Results) -> CheckResult:
    d = results["escape"]
    if "map" in d:
        return evaluate_map(d)
    ms = sorted([r for r in d["rows"].values() if r["m"]], key=lambda r: r["m"])
    pairs = list(itertools.pairwise(ms))
    rows = []
    for a, b in pairs:
        diff, se = _diff(a["discrete"], b["discrete"])
        rows.append(
            Row(
                f"discrete: time-avg. fraction past the barrier, m={a['m']} minus m={b['m']}",
                fmt(diff, se),
                ">= 0",
                f"not below -{Z:g} s.e.",
                diff >= -Z * se,
            )
        )
    diff, se = _diff(ms[0]["discrete"], ms[-1]["discrete"])
    rows.append(
        Row(f"discrete: m={ms[0]['m']} minus m={ms[-1]['m']}", fmt(diff, se), "> 0", f"above {Z:g} s.e.", diff > Z * se)
    )
    scores, summaries = {}, {}
    for model in d["models"]:
        zs, parts = [], []
        for a, b in pairs:
            dd, sd = _diff(a["discrete"], b["discrete"])
            dm, sm = _diff(a["models"][model], b["models"][model])
            z = (dm - dd) / math.hypot(sd, sm) if math.hypot(sd, sm) > 0 else (0.0 if dm == dd else math.inf)
            zs.append(z)
            parts.append(f"m={a['m']}-{b['m']}: {dm:+.3f} vs {dd:+.3f} (z {z:+.1f})")
        scores[model] = sum(z * z for z in zs) if all(math.isfinite(z) for z in zs) else math.inf
        summaries[model] = (zs, parts)
    best = min(scores, key=lambda m: scores[m])
    for model in d["models"]:
        zs, parts = summaries[model]
        ok = all(abs(z) <= Z for z in zs)
        label = f"model {model}{' (best)' if model == best else ''}: pair differences vs discrete"
        verdict = "reproduces" if ok else "does not reproduce"
        rows.append(
            Row(
                label,
                f"{verdict}: " + "; ".join(parts),
                "each within the discrete difference",
                f"abs(z) <= {Z:g} per pair" + ("" if model == best else " (informational)"),
                ok if model == best else True,
            )
        )
    finals = ", ".join(
        f"m={r['m']}: discrete {r['discrete']['time_avg']:.3f}, "
        + ", ".join(f"{k} {v['time_avg']:.3f}" for k, v in r["models"].items())
        for r in ms
    )
    note = (
        f"{d['problem']}, barrier x = {d['barrier']:.3f}, {d['sampler']} B={d['B']}, eta={d['eta']}, "
        f"rho={d['rho']}; time-averaged fraction past the barrier: {finals}. Best model: {best}."
    )
    return CheckResult(ID, CLAIM, tuple(rows), note)
