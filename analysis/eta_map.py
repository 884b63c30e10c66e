"""The eta map of digits training (C10 over its regime): ``sde_sam.validity_map`` per variant over eta.

``python -m analysis.eta_map --preset medium --out DIR`` writes ``DIR/eta_map.json`` (config, revision, provenance)
and prints each variant's verdict grid and the C10 reading; ``--preset quick`` / ``full`` run the reproduction's
stage configurations.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from analysis.pipeline import git_revision
from analysis.presets import ETA_MAP_MEDIUM, ETA_MAP_MNIST1D, preset
from analysis.stages import stage_eta_map
from sde_sam._io import provenance, save_result
from stage_types import EtaMapData


def main(argv=None) -> EtaMapData:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument(
        "--preset",
        choices=("quick", "medium", "mnist1d", "full"),
        default="medium",
        help="map size (mnist1d: medium's map on MNIST-1D)",
    )
    ap.add_argument("--out", type=Path, required=True, help="folder for eta_map.json")
    args = ap.parse_args(argv)
    revision = git_revision()  # of the code that runs (taken before the work: a commit during the run changes nothing)
    named = {"medium": ETA_MAP_MEDIUM, "mnist1d": ETA_MAP_MNIST1D}
    cfg = named[args.preset] if args.preset in named else preset(args.preset)["eta_map"]
    data = stage_eta_map(dict(cfg))["data"]
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": f"python -m analysis.eta_map --preset {args.preset}",
        "revision": revision,
        "config": cfg,
        "provenance": provenance(),
        "data": data,
    }
    path = save_result(args.out / "eta_map", None, meta)
    from paper_checks import fidelity

    for label, v in data["variants"].items():
        print(f"{label}: {v['compiles']} programs, {v['wall_s']:.0f} s\n{v['table']}\n")
    print(fidelity.evaluate({"eta_map": data}).format())
    print(f"-> {path}")
    return data


if __name__ == "__main__":
    main()
