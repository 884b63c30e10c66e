# pyright: reportTypedDictNotRequiredAccess=false
"""F8: cost per step of every variant and of the SDE simulator: wall time and XLA flops."""

import numpy as np

from stage_types import Results

from ._common import plt, save

ID, STAGES, TITLE = "F8", ("timing",), "Cost per step"


def render(results: Results, arrays: dict, out) -> list:
    d = results["timing"]
    rows = d["rows"]
    names = list(rows)
    ms = np.array([rows[k]["ms_per_step"] for k in names])
    lo = np.array([rows[k].get("ms_q25", rows[k]["ms_per_step"]) for k in names])
    hi = np.array([rows[k].get("ms_q75", rows[k]["ms_per_step"]) for k in names])
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(names) + 1.8))
    col = ["C3" if k.startswith("simulator") else "C1" if k.startswith("serial") else "C0" for k in names]
    y = np.arange(len(names))[::-1]
    ax.barh(y, ms, color=col, xerr=np.stack([ms - lo, hi - ms]), error_kw={"lw": 0.8})
    for yi, k, v, h in zip(y, names, ms, hi, strict=True):
        flops = rows[k].get("flops_vs_SAM")
        extra = "" if flops is None else f"; {flops:.2f}x SAM's flops"
        ax.text(
            h,
            yi,
            f" {v:.3g} ms [{rows[k].get('ms_q25', v):.3g}, {rows[k].get('ms_q75', v):.3g}]{extra}",
            va="center",
            fontsize=7,
        )
    ax.set_yticks(y, names)
    ax.set_xscale("log")
    ax.set_xlim(lo.min() / 2, hi.max() * 30)
    ax.set_xlabel("milliseconds per step: median and quartiles over interleaved rounds (log scale)")
    ax.set_title(
        f"{TITLE}: {d['problem']} (d={d['d']}), B={d['B']}, {d['device']}\n"
        "blue: variants (one jitted scan); orange: serial m-SAM; red: simulator; flops: XLA, one step",
        fontsize=8,
    )
    fig.tight_layout()
    return save(fig, out, "F8_cost")
