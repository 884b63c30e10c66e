"""C5 over its regime: the escape map alone (``analysis.stages.escape_map``), without the escape stage's curves.

``python -m analysis.escape_map --preset full --out DIR`` runs the map of the preset's escape stage (every ``eta`` x
``rho lambda_sharp`` x m, discrete runs and the map's SDE model) and prints the C5 reading; ``--preset regime`` runs
``analysis.presets.ESCAPE_REGIME`` (batch noise, inside the first-order regime). After every point it
writes ``DIR/escape_map.json``: command, config, revision, provenance and, beside them, the map in the escape
stage's data layout, so C5 reads the file as it is. A rerun with the same config keeps the points already written
(the points are independent: common random numbers).
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from analysis.pipeline import earlier_result, git_revision
from analysis.presets import ESCAPE_REGIME, preset
from analysis.stages import escape_map, escape_setup
from sde_sam._io import provenance, save_result, to_jsonable
from stage_types import EscapeConfig, EscapeMap, EscapeMapData, EscapeMapPoint


def run(cfg: EscapeConfig | Mapping[str, Any], out: Path, command: str, log=print) -> EscapeMapData:
    """The map of the escape config ``cfg`` as the escape stage's data (``problem``, ``sampler``, ``B``, ``map``),
    kept at ``out/escape_map.json`` after every point; an earlier file of the same config lends its points."""
    config = EscapeConfig.from_dict(cfg)  # checked before any point is computed
    if config.map is None:
        raise ValueError("the escape map's config needs a `map` (etas, rho_lambdas, num_runs, steps, ...)")
    cfg = config.to_dict()
    revision = git_revision()  # of the code that runs (taken before the work)
    path = out / "escape_map"
    prev = earlier_result(path, log)
    done = prev["map"]["points"] if isinstance(prev, dict) and prev.get("config") == to_jsonable(cfg) else []
    if done:
        log(f"keeping {len(done)} points of {path}.json")
    problem, sampler, record, head = escape_setup(config)
    total = len(config.map.etas) * len(config.map.rho_lambdas)
    out.mkdir(parents=True, exist_ok=True)

    def keep(points: list[EscapeMapPoint], mp: EscapeMap | None = None) -> None:
        meta = {"command": command, "revision": revision, "config": cfg, "provenance": provenance()}
        save_result(path, None, meta | head | {"map": mp or {"points": points}})
        if mp is None:
            p = points[-1]
            log(f"eta = {p['eta']:g}, rho*lambda = {p['rho_lambda']:g}: done ({len(points)}/{total})")

    mp = escape_map(problem, sampler, record, config, done=done, on_point=keep)
    keep(mp["points"], mp)
    return cast(EscapeMapData, head | {"map": mp})


def main(argv=None) -> EscapeMapData:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument(
        "--preset",
        choices=("quick", "full", "regime"),
        default="full",
        help="the escape stage's preset, or regime: batch noise inside the first-order regime (presets.ESCAPE_REGIME)",
    )
    ap.add_argument("--out", type=Path, required=True, help="folder for escape_map.json")
    args = ap.parse_args(argv)
    cfg = copy.deepcopy(ESCAPE_REGIME) if args.preset == "regime" else preset(args.preset)["escape"]
    data = run(cfg, args.out, f"python -m analysis.escape_map --preset {args.preset}")
    from paper_checks import escape

    print(escape.evaluate({"escape": data}).format())
    return data


if __name__ == "__main__":
    main()
