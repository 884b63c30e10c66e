# pyright: reportTypedDictNotRequiredAccess=false
"""F9: the error budget of the SDE ladder: |gap| of the key observable per model (dt = eta and finest dt) and SVAG,
with each model's equivalence-test agreement (``analysis.fidelity``: ``ss.validate`` per variant)."""

import numpy as np

from stage_types import Results

from ._common import plt, save

ID, STAGES, TITLE = "F9", ("fidelity",), "Which SDE describes the discrete run: error budget per variant"


def render(results: Results, arrays: dict, out) -> list:
    d = results["fidelity"]
    parts = [(p, part) for p in ("escape", "training") if (part := d.get(p))]
    panels = [(p, part["key_observable"], label, res) for p, part in parts for label, res in part["variants"].items()]
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.4 * nrows), squeeze=False)
    for ax in axes.ravel()[len(panels) :]:
        ax.set_visible(False)
    for ax, (part, key, label, res) in zip(axes.ravel(), panels, strict=False):
        rows = res["budget"]  # the stage's error-budget rows (model, gap, stderr, gap_at_h, agreement)
        names = [f"{r['model']} [{r['agreement']}]" for r in rows]
        y = np.arange(len(rows))
        fine = np.array([abs(r["gap"]) for r in rows])
        se = np.array([r["stderr"] for r in rows])
        coarse = np.array([np.nan if (h := r["gap_at_h"]) is None else abs(h) for r in rows])
        ax.barh(
            y,
            fine,
            xerr=2 * se,
            color=["tab:green" if n.startswith("SVAG") else "tab:blue" for n in names],
            alpha=0.8,
            label="finest dt (bar: ±2 s.e.)",
        )
        ax.plot(coarse, y, "k|", ms=12, mew=2, label="dt = eta")
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{part}: {label}", fontsize=9)
        ax.set_xlabel(f"|gap| of {key} at its largest over the recorded times", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle(TITLE)
    return save(fig, out, "F9_fidelity")
