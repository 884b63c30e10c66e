# pyright: reportTypedDictNotRequiredAccess=false
"""F4: size of the variance regularizer vs m: theory c(m) tr Sigma against the measured drift difference."""

import numpy as np

from stage_types import Results

from ._common import plt, save

ID, STAGES, TITLE = "F4", ("variance_term",), "Variance regularizer of m-USAM vs micro-batch size m"


def render(results: Results, arrays: dict, out) -> list:
    d = results["variance_term"]
    rows = d["rows"]
    m = np.array([r["m"] for r in rows])
    ts = d["trace_sigma"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.plot(m, [r["c_m"] * ts for r in rows], "k-", lw=2, label="theory: c(m) tr Sigma, c(m) = 1/m")
    ax.errorbar(
        m,
        [r["coef_general"] * ts for r in rows],
        yerr=[2 * r["coef_general_stderr"] * ts for r in rows],
        fmt="o",
        ms=6,
        capsize=3,
        color="C0",
        label="measured, general first-order drift (±2 s.e.)",
    )
    ax.errorbar(
        m * 1.06,
        [r["coef_discrete"] * ts for r in rows],
        yerr=[2 * r["coef_discrete_stderr"] * ts for r in rows],
        fmt="s",
        ms=5,
        capsize=3,
        color="C3",
        label="measured, discrete E[G] (incl. O(rho^2)) (±2 s.e.)",
    )
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("micro-batch size m")
    ax.set_ylabel("regularizer size: (drift of m-USAM − n-USAM)/(rho/2)\nprojected on grad tr Sigma, × tr Sigma")
    ax.set_title(f"{d['problem']}, B={d['B']}, rho={d['rho']}, {d['num_batches']} batches")
    ax.legend()
    return save(fig, out, "F4_variance_regularizer")
