# pyright: reportTypedDictNotRequiredAccess=false
"""F6: tr Sigma at the end of training per variant (the paper's Table 6), with the paper's values as reference."""

import numpy as np

from stage_types import Results

from ._common import plt, save

ID, STAGES, TITLE = "F6", ("training",), "tr Sigma at the end of training"


def render(results: Results, arrays: dict, out) -> list:
    d = results["training"]
    rows = d["rows"]
    names = list(rows)
    mean = np.array([rows[k]["trace_sigma_final"]["mean"] for k in names])
    se = np.array([rows[k]["trace_sigma_final"]["stderr"] for k in names])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 1]})
    ax = axes[0]
    col = [
        "C7" if k == "SGD" else "C1" if k.startswith("RW") else "C0" if k.startswith("m-SAM") else "C2" for k in names
    ]
    ax.bar(np.arange(len(names)), mean, yerr=2 * se, capsize=3, color=col)
    ax.set_xticks(np.arange(len(names)), names, rotation=35, ha="right")
    ax.set_ylabel("final tr Sigma (mean ± 2 s.e. over seeds)")
    ax.set_title(f"ours: digits MLP, B={d['batch_size']}, eta={d['eta']}, rho={d['rho']}")
    ax = axes[1]
    ref = d["paper_reference"]
    ax.bar(np.arange(len(ref)), list(ref.values()), color=["C7", "C2", "C1"], hatch="//", alpha=0.6)
    ax.set_xticks(np.arange(len(ref)), list(ref))
    for i, v in enumerate(ref.values()):
        ax.text(i, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("final tr Sigma")
    ax.set_title("paper's Table 6 (reference;\ndifferent model and data)", fontsize=9)
    fig.suptitle(TITLE)
    return save(fig, out, "F6_final_trace_sigma")
