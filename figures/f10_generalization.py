# pyright: reportTypedDictNotRequiredAccess=false
"""F10: final test accuracy against the micro-batch size m, one line per label-noise level, RW-SAM as a marker
(and SGD as a dashed level), per model; error bars 2 s.e. over seeds (claim C11)."""

import numpy as np

from stage_types import Results

from ._common import colors, plt, save

ID, STAGES, TITLE = "F10", ("generalization",), "test accuracy against m under label noise"


def _ms(rows: dict, batch_size: int) -> list[tuple[int, str]]:
    ms = sorted(((int(k.split("=")[1].rstrip(")")), k) for k in rows if k.startswith("m-SAM (m=")), reverse=True)
    return [(batch_size, "SAM"), *ms]


def render(results: Results, arrays: dict, out) -> list:
    d = results["generalization"]
    models = d["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
    for ax, (name, res) in zip(axes[0], models.items(), strict=False):
        B = res["config"]["batch_size"]
        levels = sorted(res["rows"], key=float)
        chain = []
        for col, p in zip(colors(len(levels), "plasma"), levels, strict=False):
            rows = res["rows"][p]
            chain = _ms(rows, B)
            x = np.arange(len(chain))
            acc = [rows[k]["test_accuracy_final"] for _, k in chain]
            ax.errorbar(
                x,
                [a["mean"] for a in acc],
                yerr=[2 * a["stderr"] for a in acc],
                color=col,
                marker="o",
                capsize=3,
                label=f"label noise {float(p):g}",
            )
            rw = rows["RW-SAM"]["test_accuracy_final"]
            ax.errorbar(
                [len(chain)],
                [rw["mean"]],
                yerr=[2 * rw["stderr"]],
                color=col,
                marker="*",
                markersize=12,
                capsize=3,
                linestyle="none",
            )
            ax.axhline(rows["SGD"]["test_accuracy_final"]["mean"], color=col, linestyle="--", linewidth=0.8)
        ax.set_xticks(
            np.arange(len(chain) + 1), [f"m={m}" + (" (SAM)" if k == "SAM" else "") for m, k in chain] + ["RW-SAM"]
        )
        ax.set_ylabel("final test accuracy (mean ± 2 s.e.)")
        extra = "; short CPU run, a GPU settles it" if res.get("gpu_settles") else ""
        ax.set_title(
            f"{name}: B={B}, {res['config']['steps']} steps, {len(res['config']['seeds'])} seeds{extra}", fontsize=9
        )
        ax.legend(title="dashed: SGD", fontsize=7)
    fig.suptitle(TITLE)
    return save(fig, out, "F10_generalization")
