"""F8: cost per step of every variant and of the SDE simulator."""

import numpy as np

from ._common import plt, save

ID, STAGES, TITLE = "F8", ("timing",), "Wall-clock cost per step"


def render(results: dict, arrays: dict, out) -> list:
    d = results["timing"]
    rows = d["rows"]
    names = list(rows)
    ms = np.array([rows[k]["ms_per_step"] for k in names])
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.5))
    col = ["C3" if k.startswith("simulator") else "C1" if k.startswith("serial") else "C0" for k in names]
    y = np.arange(len(names))[::-1]
    ax.barh(y, ms, color=col)
    for yi, k, v in zip(y, names, ms):
        ax.text(v, yi, f" {v:.3g} ms ({rows[k]['vs_SAM']:.2f}x SAM)", va="center", fontsize=8)
    ax.set_yticks(y, names)
    ax.set_xscale("log")
    ax.set_xlim(ms.min() / 2, ms.max() * 8)
    ax.set_xlabel("milliseconds per step (median; log scale)")
    ax.set_title(f"{TITLE}: {d['problem']} (d={d['d']}), B={d['B']}, {d['device']}\n"
                 "blue: variants (one jitted scan); orange: serial m-SAM (micro-batches in sequence); red: simulator", fontsize=9)
    return save(fig, out, "F8_cost")
