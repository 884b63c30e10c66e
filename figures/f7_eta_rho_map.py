"""F7: the weak-error map over (eta, rho) with the fit err ~ C1 eta^alpha + C2 rho^beta."""

import numpy as np

from ._common import plt, save

ID, STAGES, TITLE = "F7", ("eta_rho",), "Weak error of USAM's SDE over (eta, rho)"


def render(results: dict, arrays: dict, out) -> list:
    d = results["eta_rho"]
    E = np.asarray(d["errors"])
    etas, rhos = d["etas"], d["rhos"]
    fig, ax = plt.subplots(figsize=(6.2, 5))
    ax.grid(False)
    im = ax.imshow(np.log10(E), origin="lower", cmap="magma_r", aspect="auto")
    ax.set_xticks(range(len(rhos)), [f"{r:g}" for r in rhos])
    ax.set_yticks(range(len(etas)), [f"{e:g}" for e in etas])
    ax.set_xlabel("perturbation radius rho")
    ax.set_ylabel("learning rate eta")
    for i in range(len(etas)):
        for j in range(len(rhos)):
            ax.text(j, i, f"{E[i, j]:.2g}", ha="center", va="center", fontsize=8,
                    color="white" if np.log10(E[i, j]) > np.log10(E).mean() else "black")
    fig.colorbar(im, label="log10 weak error")
    ax.set_title(f"{TITLE}\nfit: alpha = {d['alpha']:.2f} [{d['alpha_lo']:.2f}, {d['alpha_hi']:.2f}], "
                 f"beta = {d['beta']:.2f} [{d['beta_lo']:.2f}, {d['beta_hi']:.2f}]", fontsize=9)
    return save(fig, out, "F7_eta_rho_map")
