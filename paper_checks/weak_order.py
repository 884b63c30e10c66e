"""C4: weak order 1 for every variant (fitted slope of the weak error against eta, :mod:`analysis.weak_order`)."""

from ._base import CheckResult, Row, close

ID, STAGES, TOL = "C4", ("weak_order",), 0.2
CLAIM = "weak order 1 for every variant (first-order SME)"


def evaluate(results: dict) -> CheckResult:
    d = results["weak_order"]
    rows = []
    for study in ("linreg_exact", "linreg_control", "nonconvex_mc"):
        for r in d.get(study, {}).values():
            if r["order"] != 1:
                continue
            rows.append(Row(f"{r['variant']} ({study}, {r['method']})",
                            f"{r['slope']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]", "1", f"±{TOL}",
                            close(r["slope"], 1.0, TOL)))
    return CheckResult(ID, CLAIM, tuple(rows), "slope of log max_t |E phi(X_t) - E phi(x_k)| on log eta, 95% interval")
