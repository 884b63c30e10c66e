# pyright: reportTypedDictNotRequiredAccess=false
"""F5: structure of the stochastic gradient noise: spectra of Sigma and H, their alignment over training, tail index."""

import numpy as np

from stage_types import Results

from ._common import plt, save

ID, STAGES, TITLE = "F5", ("sgn",), "Stochastic gradient noise structure along SGD training"


def render(results: Results, arrays: dict, out) -> list:
    d, a = results["sgn"], arrays["sgn"]
    se, he, steps = np.asarray(a["sigma_eigs"]), np.asarray(a["hessian_eigs"]), np.asarray(a["steps"])
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    ax = axes[0]
    k = np.arange(1, se.shape[1] + 1)
    for t, ls in ((0, ":"), (len(steps) - 1, "-")):
        ax.plot(k, se[t], "o" + ls, color="C0", label=f"Sigma, step {steps[t]}")
        ax.plot(k, np.abs(he[t]), "s" + ls, color="C3", label=f"|H|, step {steps[t]}")
    ax.set_yscale("log")
    ax.set_xlabel("eigenvalue index i")
    ax.set_ylabel("i-th largest eigenvalue")
    ax.set_title("top spectra of Sigma and H")
    ax.legend()
    ax = axes[1]
    rows = d["rows"]
    st = [r["step"] for r in rows]
    ax.errorbar(
        st,
        [r["cosine"] for r in rows],
        yerr=[2 * r["cosine_stderr"] for r in rows],
        marker="o",
        capsize=3,
        label="cosine tr(Sigma H)/(|Sigma|_F |H|_F)",
    )
    ax.plot(st, [r["overlap"] for r in rows], "s-", label=f"top-{d['k']} eigenspace overlap")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("training step k")
    ax.set_ylabel("alignment (1 = aligned)")
    ax.set_title("alignment of Sigma and H")
    ax.legend()
    ax = axes[2]
    ax.errorbar(
        st,
        [r["tail_index"] for r in rows],
        yerr=[2 * r["tail_index_stderr"] for r in rows],
        marker="o",
        capsize=3,
        color="C2",
        label="measured (±2 s.e.)",
    )
    ax.axhline(2.0, color="k", ls="--", lw=1, label="Gaussian (alpha = 2)")
    ax.set_xlabel("training step k")
    ax.set_ylabel("tail index alpha of projected noise")
    ax.set_title("heavy tails (alpha < 2)")
    ax.legend()
    fig.suptitle(f"{TITLE} ({d['problem']}, d={d['d']})")
    return save(fig, out, "F5_sgn_structure")
