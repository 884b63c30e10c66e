"""Shared plotting helpers: a non-interactive backend, one style, PNG + PDF output."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from sde_sam._io import atomic_write_bytes

plt.rcParams.update(
    {
        "figure.dpi": 110,
        "savefig.dpi": 130,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "font.size": 10,
        "axes.titlesize": 11,
        "legend.fontsize": 8,
        "legend.framealpha": 0.85,
    }
)


def save(fig, out: str | Path, name: str) -> list[Path]:
    """Write ``out/name.png`` and ``out/name.pdf`` atomically (rendered in memory, then one unique temporary
    file each, renamed into place); returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.tight_layout()
    for p in paths:
        buf = io.BytesIO()
        fig.savefig(buf, format=p.suffix[1:])
        atomic_write_bytes(p, buf.getvalue())
    plt.close(fig)
    return paths


def colors(n: int, cmap: str = "viridis"):
    cm = plt.get_cmap(cmap)
    return [cm(0.05 + 0.85 * i / max(n - 1, 1)) for i in range(n)]
