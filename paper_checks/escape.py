"""C5: smaller m leaves the sharp basin sooner, and which SDE reproduces that.

Measured against the problem's true barrier (``sde_sam.problems.sharp_flat_barrier``): the time-averaged fraction
of runs past it (the area under the F1 curves; larger = left sooner). The discrete rows test the claim: m = 1
leaves sooner than m = B (above 2 s.e.) and no adjacent pair is inverted beyond 2 s.e. The model rows ask
whether an SDE reproduces the discrete ordering: for each adjacent pair of m, the model's difference agrees
with the discrete difference within 2 combined s.e. The check passes when the discrete claim holds and the best
model of the ladder (smallest sum of squared z over the pairs) reproduces every pair; it names that model.
"""

import math

from ._base import CheckResult, Row, fmt

ID, STAGES, Z = "C5", ("escape",), 2.0
CLAIM = "smaller m leaves the sharp basin sooner (discrete), and the best SDE of the ladder reproduces it"


def _diff(a: dict, b: dict) -> tuple[float, float]:
    return a["time_avg"] - b["time_avg"], math.hypot(a["time_avg_stderr"], b["time_avg_stderr"])


def evaluate(results: dict) -> CheckResult:
    d = results["escape"]
    ms = sorted([r for r in d["rows"].values() if r["m"]], key=lambda r: r["m"])
    pairs = list(zip(ms, ms[1:]))
    rows = []
    for a, b in pairs:
        diff, se = _diff(a["discrete"], b["discrete"])
        rows.append(Row(f"discrete: time-avg. fraction past the barrier, m={a['m']} minus m={b['m']}", fmt(diff, se),
                        ">= 0", f"not below -{Z:g} s.e.", diff >= -Z * se))
    diff, se = _diff(ms[0]["discrete"], ms[-1]["discrete"])
    rows.append(Row(f"discrete: m={ms[0]['m']} minus m={ms[-1]['m']}", fmt(diff, se), "> 0", f"above {Z:g} s.e.",
                    diff > Z * se))
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
    best = min(scores, key=scores.get)
    for model in d["models"]:
        zs, parts = summaries[model]
        ok = all(abs(z) <= Z for z in zs)
        label = f"model {model}{' (best)' if model == best else ''}: pair differences vs discrete"
        verdict = "reproduces" if ok else "does not reproduce"
        rows.append(Row(label, f"{verdict}: " + "; ".join(parts), "each within the discrete difference",
                        f"abs(z) <= {Z:g} per pair" + ("" if model == best else " (informational)"),
                        ok if model == best else True))
    finals = ", ".join(f"m={r['m']}: discrete {r['discrete']['time_avg']:.3f}, "
                       + ", ".join(f"{k} {v['time_avg']:.3f}" for k, v in r["models"].items()) for r in ms)
    note = (f"{d['problem']}, barrier x = {d['barrier']:.3f}, {d['sampler']} B={d['B']}, eta={d['eta']}, "
            f"rho={d['rho']}; time-averaged fraction past the barrier: {finals}. Best model: {best}.")
    return CheckResult(ID, CLAIM, tuple(rows), note)
