"""C5: smaller m leaves the sharp basin sooner: the time-averaged fraction of paths outside the sharp basin
(the area under the F1 curves, larger = left sooner) decreases as m grows."""

import math

from ._base import CheckResult, Row, fmt

ID, STAGES, Z = "C5", ("escape",), 2.0
CLAIM = "smaller m leaves the sharp basin sooner"


def evaluate(results: dict) -> CheckResult:
    d = results["escape"]
    ms = sorted([r for r in d["rows"].values() if r["m"]], key=lambda r: r["m"])
    rows = []
    for side in ("discrete", "sde"):
        for a, b in zip(ms, ms[1:]):
            diff = a[f"{side}_time_avg"] - b[f"{side}_time_avg"]
            se = math.hypot(a[f"{side}_time_avg_stderr"], b[f"{side}_time_avg_stderr"])
            rows.append(Row(f"{side}: time-avg. outside fraction m={a['m']} minus m={b['m']}", fmt(diff, se), ">= 0",
                            f"not below -{Z:g} stderr", diff >= -Z * se))
        a, b = ms[0], ms[-1]
        diff = a[f"{side}_time_avg"] - b[f"{side}_time_avg"]
        se = math.hypot(a[f"{side}_time_avg_stderr"], b[f"{side}_time_avg_stderr"])
        rows.append(Row(f"{side}: m={a['m']} minus m={b['m']}", fmt(diff, se), "> 0", f"above {Z:g} stderr",
                        diff > Z * se))
    return CheckResult(ID, CLAIM, tuple(rows),
                       f"{d['problem']}, B={d['B']}, eta={d['eta']}, rho={d['rho']}; time-averaged fraction outside")
