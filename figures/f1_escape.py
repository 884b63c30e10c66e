# pyright: reportTypedDictNotRequiredAccess=false
"""F1: escape from a sharp minimum vs m: fraction of paths past the true barrier over time, discrete and each SDE."""

import numpy as np

from sde_sam import mean_stderr
from stage_types import EscapeData, Results

from ._common import colors, plt, save

ID, STAGES, TITLE = "F1", ("escape",), "Escape from the sharp basin vs micro-batch size m"


def _band(v):
    kept = v[~np.any(np.isnan(v), axis=1)]
    mean, stderr = mean_stderr(kept)
    return mean, stderr, v.shape[0] - kept.shape[0]


def render(results: Results, arrays: dict, out) -> list:
    d, a = results["escape"], arrays["escape"]
    if "rows" not in d:
        raise ValueError("F1 draws the escape stage's data (its rows and paths), not a map alone")
    t = np.asarray(a["times"])
    rows = sorted(d["rows"].items(), key=lambda kv: kv[1]["m"] or 10**9)
    ms = [kv for kv in rows if kv[1]["m"]]
    cs = dict(zip([k for k, _ in ms], colors(len(ms), "plasma"), strict=False))
    panels = [("discrete", "discrete runs")] + [
        (m, f"SDE: drift {m.split('/')[0]}, diffusion {m.split('/')[1]}") for m in d["models"]
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4), sharey=True, squeeze=False)
    for ax, (side, title) in zip(axes[0], panels, strict=False):
        dropped = 0
        for label, r in rows:
            key = (
                f"discrete__{r['index']}" if side == "discrete" else f"sde__{r['index']}__{r['models'][side]['index']}"
            )
            mean, se, nd = _band(np.asarray(a[key]))
            dropped += nd
            kw = {"color": cs[label], "lw": 1.8} if r["m"] else {"color": "k", "ls": "--", "lw": 1.8}
            ax.plot(t, mean, label=label, **kw)
            ax.fill_between(t, mean - se, mean + se, color=kw["color"], alpha=0.15, lw=0)
        note = f", {dropped} diverged left out" if dropped else ""
        ax.set_title(f"{title}{note}", fontsize=9)
        ax.set_xlabel("time t = k·eta")
    axes[0][0].set_ylabel(f"fraction past the barrier x = {d['barrier']:.2f}")
    axes[0][0].set_ylim(-0.02, 1.02)
    axes[0][-1].legend(title="variant (band: ±1 s.e.)", loc="lower right")
    fig.suptitle(f"{TITLE} ({d['problem']}, {d['sampler']} B={d['B']}, eta={d['eta']}, rho={d['rho']})")
    files = save(fig, out, "F1_escape")
    if "map" in d:
        files += _map(d, out)
    return files


def _map(d: EscapeData, out) -> list:
    """The C5 map: m = 1 minus m = B in time-averaged fraction past the barrier, ± 3 s.e., against rho lambda_sharp,
    per eta, discrete and the map's SDE; the first-order regime shaded."""
    mp = d["map"]
    fig, ax = plt.subplots(figsize=(6, 4))
    limit = mp["theory_rho_lambda"]
    ax.axvspan(0, limit, color="0.9", label=f"first-order regime (rho·lambda <= {limit:g})")
    etas = sorted({p["eta"] for p in mp["points"]})
    for c, eta in zip(colors(len(etas), "viridis"), etas, strict=True):
        pts = sorted((p for p in mp["points"] if p["eta"] == eta), key=lambda p: p["rho_lambda"])
        for side, ls in (("discrete", "-"), ("model", ":")):
            x, y, e = [], [], []
            for p in pts:
                rows = sorted(p["rows"].values(), key=lambda r: r["m"])
                a, b = rows[0][side], rows[-1][side]
                x.append(p["rho_lambda"])
                y.append(a["time_avg"] - b["time_avg"])
                e.append(3 * float(np.hypot(a["time_avg_stderr"], b["time_avg_stderr"])))
            ax.errorbar(
                x,
                y,
                yerr=e,
                color=c,
                ls=ls,
                marker="o" if side == "discrete" else "s",
                capsize=3,
                label=f"eta={eta:g}, {'discrete' if side == 'discrete' else 'SDE ' + mp['model']}",
            )
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rho · lambda_sharp")
    ax.set_ylabel("fraction past the barrier: m=1 minus m=B (±3 s.e.)")
    ax.set_title(f"C5 over its regime ({mp['num_runs']} runs per point, {mp['steps']} steps)", fontsize=9)
    ax.legend(fontsize=7)
    return save(fig, out, "F1_escape_map")
