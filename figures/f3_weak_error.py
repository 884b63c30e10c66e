# pyright: reportTypedDictNotRequiredAccess=false
"""F3: weak error vs eta (log-log) per variant, first- and second-order SME, with fitted slopes."""

import numpy as np

from stage_types import Results

from ._common import plt, save

ID, STAGES, TITLE = "F3", ("weak_order",), "Weak error of the SDE models vs learning rate"


def render(results: Results, arrays: dict, out) -> list:
    d = results["weak_order"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    studies = {k: v for s in ("linreg_exact", "linreg_control", "nonconvex_mc") for k, v in d.get(s, {}).items()}
    names = sorted({r["variant"] for r in studies.values()})
    cs = dict(zip(names, [plt.get_cmap("tab10")(i % 10) for i in range(len(names))], strict=False))
    for order, ax in ((1, axes[0]), (2, axes[1])):
        for _key, r in studies.items():
            if r["order"] != order:
                continue
            e, s = np.asarray(r["etas"]), np.asarray(r["errors"])
            se = np.asarray(r["stderrs"])
            ax.errorbar(
                e,
                s,
                yerr=se if se.any() else None,
                marker="o",
                ms=4,
                capsize=2,
                color=cs[r["variant"]],
                label=f"{r['variant']} [{r['method']}]: slope {r['slope']:.2f}",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate eta")
        ax.set_title(f"{'first' if order == 1 else 'second'}-order SME (slope {order} expected)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("weak error max_t |E phi(X_t) - E phi(x_k)|")
    fig.suptitle(TITLE + " (linear regression: exact moments; T = {:g})".format(d["config"]["t1"]))
    return save(fig, out, "F3_weak_error")
