"""F1: escape from a sharp minimum vs m: fraction of paths outside the sharp basin over time, discrete and SDE."""

import numpy as np

from ._common import colors, plt, save

ID, STAGES, TITLE = "F1", ("escape",), "Escape from the sharp basin vs micro-batch size m"


def render(results: dict, arrays: dict, out) -> list:
    d, a = results["escape"], arrays["escape"]
    t = np.asarray(a["times"])
    rows = sorted(d["rows"].items(), key=lambda kv: kv[1]["m"] or 10**9)
    ms = [kv for kv in rows if kv[1]["m"]]
    cs = dict(zip([k for k, _ in ms], colors(len(ms), "plasma")))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, side, title in ((axes[0], "discrete", "discrete runs"), (axes[1], "sde", "SDE (Euler–Maruyama)")):
        for label, r in rows:
            v = np.asarray(a[f"{side}__{r['index']}"])
            mean, se = v.mean(0), v.std(0, ddof=1) / np.sqrt(v.shape[0])
            kw = dict(color=cs[label], lw=1.8) if r["m"] else dict(color="k", ls="--", lw=1.8)
            ax.plot(t, mean, label=label, **kw)
            ax.fill_between(t, mean - se, mean + se, color=kw["color"], alpha=0.15, lw=0)
        ax.set_title(f"{title}: {v.shape[0]} paths per curve")
        ax.set_xlabel("time t = k·eta (SDE time units)")
    axes[0].set_ylabel("fraction of paths outside the sharp basin")
    axes[0].set_ylim(-0.02, 1.02)
    axes[1].legend(title="variant (band: ±1 s.e.)", loc="upper left")
    fig.suptitle(f"{TITLE} ({d['problem']}, B={d['B']}, eta={d['eta']}, rho={d['rho']})")
    return save(fig, out, "F1_escape")
