# pyright: reportTypedDictNotRequiredAccess=false
"""C1: the drift of every variant equals DESIGN §3.1 up to O(rho^2): the residual ``||E[G] - b||`` between the
exact expected discrete step and the closed-form drift has slope 2 in ``rho`` (log-log)."""

from stage_types import Results

from ._base import CheckResult, Row, close, fmt

ID, STAGES, TOL = "C1", ("drift",), 0.25
CLAIM = "drift of every variant = DESIGN §3.1 up to O(rho^2) (residual slope 2 in rho)"


def evaluate(results: Results) -> CheckResult:
    d = results["drift"]
    rows = []
    for name, fit in d["residual_fits"].items():
        rows.append(
            Row(
                f"{name} residual slope",
                fmt(fit["slope"], fit["slope_stderr"]),
                "2",
                f"±{TOL}",
                close(fit["slope"], 2.0, TOL),
            )
        )
    note = (
        f"exact expectation over all {d['B']}-batches of {d['problem']} (n={d['n']}, d={d['d']}), float64, "
        f"rho in {d['rhos']}"
    )
    return CheckResult(ID, CLAIM, tuple(rows), note)
