# pyright: reportTypedDictNotRequiredAccess=false
"""C9: SAM-ON's regularizer acts only on the masked coordinates: its perturbation is zero off the mask, and its
drift matches ``grad[f + (rho/2)(||P g||^2 + c(B) tr(P Sigma P))]``, not the unmasked regularizer."""

from stage_types import Results

from ._base import CheckResult, Row, fmt

ID, STAGES = "C9", ("drift",)
CLAIM = "SAM-ON's regularizer acts only on the masked coordinates"
MASKED_TOL, UNMASKED_MIN = 0.01, 0.1


def evaluate(results: Results) -> CheckResult:
    s = results["drift"]["sam_on"]
    r = s["rows"][-1]
    rows = [
        Row(
            "max |perturbation| off the mask (every batch)",
            fmt(s["max_unmasked_perturbation"]),
            "0",
            "exact",
            s["max_unmasked_perturbation"] == 0.0 and s["max_masked_perturbation"] > 0.0,
        ),
        Row(
            f"rel. error vs masked regularizer (rho={r['rho']:g})",
            fmt(r["rel_err_masked"]),
            "0 (O(rho))",
            f"<= {MASKED_TOL}",
            r["rel_err_masked"] <= MASKED_TOL,
        ),
        Row(
            f"rel. error vs unmasked regularizer (rho={r['rho']:g})",
            fmt(r["rel_err_unmasked"]),
            "O(1)",
            f">= {UNMASKED_MIN}",
            r["rel_err_unmasked"] >= UNMASKED_MIN,
        ),
    ]
    return CheckResult(
        ID,
        CLAIM,
        tuple(rows),
        f"USAM-ON perturbing leaf {s['masked_leaf']!r} "
        f"({s['num_masked']} of {s['d']} coordinates), exact expectation, float64",
    )
