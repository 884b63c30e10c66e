# pyright: reportTypedDictNotRequiredAccess=false
"""F2: tr Sigma along training for several m: real training, and real training against the SDE prediction."""

import numpy as np

from stage_types import Results

from ._common import colors, plt, save

ID, STAGES, TITLE = "F2", ("training", "train_sde"), "tr Sigma along training"


def render(results: Results, arrays: dict, out) -> list:
    tr, ts = results["training"], results["train_sde"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    keys = [k for k in tr["rows"] if k.startswith("m-SAM")] + ["SGD", "SAM", "RW-SAM"]
    cs = colors(len(keys), "tab10")
    for k, c in zip(keys, cs, strict=False):
        r = tr["rows"][k]
        ax.plot(
            r["steps"],
            r["trace_sigma_mean_curve"],
            marker="o",
            ms=3,
            color=c,
            label=k,
            ls="-" if k.startswith("m-SAM") else "--",
        )
    ax.set_xlabel("training step k")
    ax.set_ylabel("tr Sigma (per-example gradient covariance)")
    ax.set_yscale("log")
    ax.set_title(f"real training, B={tr['batch_size']}, rho={tr['rho']} (mean over seeds)")
    ax.legend(ncol=2)
    ax = axes[1]
    vs = ts["variants"]
    for (label, v), c in zip(vs.items(), colors(len(vs), "tab10"), strict=False):
        comp = v["comparison"]["trace_sigma"]
        x = np.asarray(v["steps"])
        tm, tb = np.asarray(comp["train_mean"]), np.asarray(comp["train_band95"])
        sm, sb = np.asarray(comp["sde_mean"]), np.asarray(comp["sde_band95"])
        ax.plot(x, tm, color=c, marker="o", ms=3, label=f"{label}: training")
        ax.fill_between(x, tm - tb, tm + tb, color=c, alpha=0.15, lw=0)
        ax.plot(x, sm, color=c, ls=":", marker="s", ms=3, label=f"{label}: SDE prediction")
        ax.fill_between(x, sm - sb, sm + sb, color=c, alpha=0.08, lw=0)
    ax.set_xlabel("training step k (SDE time t = k·eta)")
    ax.set_ylabel("tr Sigma")
    ax.set_yscale("log")
    cfg = ts["preset_config"]
    ax.set_title(f"training vs SDE (bands: 95%), {cfg['problem'][0]} hidden={cfg['problem'][1].get('hidden')}")
    ax.legend(ncol=1)
    return save(fig, out, "F2_trace_sigma_training")
