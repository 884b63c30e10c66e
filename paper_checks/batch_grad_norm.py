# pyright: reportTypedDictNotRequiredAccess=false
"""C3 (Prop. 3.9): ``E||grad f_gamma(x)||`` decreases with the batch size."""

import itertools
import math

from stage_types import Results

from ._base import CheckResult, Row, fmt

ID, STAGES, Z = "C3", ("grad_norm",), 2.0
CLAIM = "E||grad f_gamma|| decreases with the batch size (Prop. 3.9)"


def evaluate(results: Results) -> CheckResult:
    d = results["grad_norm"]
    rs = d["rows"]
    rows = []
    for a, b in itertools.pairwise(rs):
        diff = a["value"] - b["value"]
        se = math.hypot(a["stderr"], b["stderr"])
        rows.append(
            Row(
                f"E||g_B|| at B={a['B']} minus at B={b['B']}",
                fmt(diff, se),
                "> 0",
                f"not below -{Z:g} stderr",
                diff > -Z * se,
            )
        )
    first, last = rs[0], rs[-1]
    diff = first["value"] - last["value"]
    se = math.hypot(first["stderr"], last["stderr"])
    rows.append(Row(f"B={first['B']} vs B={last['B']}", fmt(diff, se), "> 0", f"above {Z:g} stderr", diff > Z * se))
    return CheckResult(
        ID, CLAIM, tuple(rows), f"{d['problem']}, without replacement, ||g|| = {d['full_grad_norm']:.4g}"
    )
