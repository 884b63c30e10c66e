# pyright: reportTypedDictNotRequiredAccess=false
"""F7: USAM's weak error over (eta, rho) by exact moments, and which scaling it follows (DESIGN §6.4)."""

import textwrap

import numpy as np

from stage_types import Results

from ._common import plt, save

ID, STAGES, TITLE = "F7", ("eta_rho",), "Weak error of USAM's SDE over (eta, rho), exact moments"


def render(results: Results, arrays: dict, out) -> list:
    d = results["eta_rho"]
    E = np.asarray(d["errors"])
    etas, rhos = d["etas"], d["rhos"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11.5, 4.8))
    ax.grid(False)
    im = ax.imshow(np.log10(E), origin="lower", cmap="magma_r", aspect="auto")
    ax.set_xticks(range(len(rhos)), [f"{r:g}" for r in rhos])
    ax.set_yticks(range(len(etas)), [f"{e:g}" for e in etas])
    ax.set_xlabel("perturbation radius rho")
    ax.set_ylabel("learning rate eta")
    for i in range(len(etas)):
        for j in range(len(rhos)):
            ax.text(
                j,
                i,
                f"{E[i, j]:.2g}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if np.log10(E[i, j]) > np.log10(E).mean() else "black",
            )
    fig.colorbar(im, ax=ax, label="log10 weak error")
    fit = d["fit"]
    fit_text = (
        f"fit C1 eta^a + C2 rho^b: a = {fit['alpha']:.2f} [{fit['alpha_lo']:.2f}, {fit['alpha_hi']:.2f}], "
        f"b = {fit['beta']:.2f} [{fit['beta_lo']:.2f}, {fit['beta_hi']:.2f}]"
        if d["fit_informative"]
        else "two-parameter fit C1 eta^a + C2 rho^b not identified (intervals wider than 1): not shown"
    )
    ax.set_title(fit_text, fontsize=8)
    for name, line in d["lines"].items():
        ax2.loglog(
            d["etas"],
            line["errors"],
            "o-",
            label=f"{name}: slope {line['slope']:.2f} [{line['lo']:.2f}, {line['hi']:.2f}]",
        )
    ax2.set_xlabel("learning rate eta")
    ax2.set_ylabel("weak error")
    ax2.legend(fontsize=8)
    ax2.set_title("\n".join(textwrap.wrap(d["scaling"], 70)), fontsize=7)
    fig.suptitle(TITLE)
    return save(fig, out, "F7_eta_rho_map")
