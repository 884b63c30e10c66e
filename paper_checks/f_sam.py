# pyright: reportTypedDictNotRequiredAccess=false
"""C8: F-SAM with sigma = 1 cancels the ``||g||^2`` term: the coefficient of ``(rho/2) grad||g||^2`` in F-USAM's
exact expected step (minus ``g`` and the variance term) is ``1 - sigma``."""

from stage_types import Results

from ._base import CheckResult, Row, close, fmt

ID, STAGES, TOL = "C8", ("drift",), 0.01
CLAIM = "F-SAM with sigma = 1 cancels the ||g||^2 term (coefficient 1 - sigma)"


def evaluate(results: Results) -> CheckResult:
    f = results["drift"]["f_usam_grad_norm_coefficient"]
    rows = [
        Row(
            f"||g||^2 coefficient, sigma={s}",
            fmt(v, digits=6),
            fmt(f["expected"][s]),
            f"±{TOL}",
            close(v, f["expected"][s], TOL),
        )
        for s, v in f["values"].items()
    ]
    return CheckResult(ID, CLAIM, tuple(rows), f"F-USAM (EMA state mu = g), exact expectation, rho = {f['rho']:g}")
