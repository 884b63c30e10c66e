# pyright: reportTypedDictNotRequiredAccess=false
"""C2: n-USAM's drift has no ``tr Sigma`` term, m-USAM's coefficient of ``(rho/2) grad tr Sigma`` is ``c(m)``.

Exact part (small problem, float64, smallest rho): coefficients of the exact expected step. Monte Carlo part
(breast cancer, per-batch coefficients of the general first-order rule, common batches): estimate ± stderr."""

from stage_types import Results

from ._base import CheckResult, Row, close, fmt

ID, STAGES = "C2", ("drift", "variance_term")
CLAIM = "n-USAM's drift has no tr Sigma term; m-USAM's coefficient is c(m)"
REL_TOL_EXACT, ABS_TOL_EXACT, Z = 0.01, 0.01, 3.0


def evaluate(results: Results) -> CheckResult:
    rows = []
    vc = results["drift"]["variance_coefficient"]
    rho = vc["rhos"][-1]
    for name, vals in vc["values"].items():
        exp = vc["expected"][name]
        tol = ABS_TOL_EXACT if exp == 0 else REL_TOL_EXACT * exp
        rows.append(
            Row(
                f"{name} coefficient (exact, rho={rho:g})",
                fmt(vals[-1], digits=6),
                fmt(exp),
                f"±{tol:.3g}",
                close(vals[-1], exp, tol),
            )
        )
    vt = results["variance_term"]
    for r in vt["rows"]:
        tol = Z * r["coef_general_stderr"]
        rows.append(
            Row(
                f"m-USAM (m={r['m']}) coefficient (MC, {vt['problem']}, B={vt['B']})",
                fmt(r["coef_general"], r["coef_general_stderr"]),
                f"c(m) = {r['c_m']:.4g}",
                f"±{Z:g} stderr = {tol:.2g}",
                close(r["coef_general"], r["c_m"], tol),
            )
        )
    return CheckResult(ID, CLAIM, tuple(rows), "coefficient = <E[G_m - G_n], v>/<v, v>, v = (rho/2) grad tr Sigma")
