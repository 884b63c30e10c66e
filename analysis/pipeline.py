"""Cached, resumable stages (DESIGN §7): each stage is a pure function of its config, its result is written
atomically under the output folder (``.npz`` of arrays + ``.json`` of data, config, seed, versions, device and
git revision, via :func:`sde_sam._io.save_result`) and found again by a hash of ``(name, config)``.

A finished stage is loaded, never recomputed; an interrupted run therefore resumes at the first stage without
a result. A cache file that cannot be read, whose stored checksums disagree with its contents, or whose data is
not of its stage's type (:mod:`stage_types`: written by code whose data had another shape) is reported
(one line naming the file and the reason) and the stage is recomputed; the bad files are kept beside it with
the suffix ``.<time>-<pid>-<i>.corrupt`` (unique, so a second corruption never overwrites the first). A stage
whose freshly computed data is not of its type (keys it lacks, values of another type; keys it adds are allowed) is
a fault of its code: its result is written all the same and a ``TypeError`` names where.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

import numpy as np

from sde_sam._io import (
    arrays_checksum,
    from_jsonable,
    load_result,
    provenance,
    quarantine,
    result_paths,
    save_result,
    to_jsonable,
)
from stage_types import CONFIGS, StageConfig, mismatches, plain

__all__ = [
    "CacheCorrupted",
    "Stage",
    "StageResult",
    "config_hash",
    "earlier_result",
    "git_revision",
    "run_stage",
    "stage_path",
]

#: Bumped when the on-disk layout changes (part of every hash).
CACHE_FORMAT = 1

#: Called as ``hook(stage_name)`` after each stage's result is on disk (tests use it to simulate interruption).
AFTER_STAGE_HOOKS: list[Callable[[str], None]] = []


class CacheCorrupted(Exception):
    """A stage's cache files exist but cannot be trusted (unreadable or checksum mismatch)."""


@dataclasses.dataclass(frozen=True)
class Stage:
    """A named pure function ``fn(config) -> {"data": JSON-able dict, "arrays": {name: array}}``; ``config`` a
    stage's frozen config (:mod:`stage_types`) or a plain mapping."""

    name: str
    fn: Callable[[Any], Mapping[str, object]]
    config: StageConfig | Mapping[str, Any]
    description: str = ""


@dataclasses.dataclass
class StageResult:
    name: str
    data: dict
    arrays: dict[str, np.ndarray]
    meta: dict
    path: Path
    cached: bool
    wall_s: float


def config_dict(config: StageConfig | Mapping[str, Any]) -> dict[str, Any]:
    """A config's JSON form (:meth:`~stage_types.StageConfig.to_dict`: the preset's entry it came from)."""
    return to_jsonable(plain(config))


def config_hash(name: str, config: StageConfig | Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of ``(format, name, config)``."""
    doc = json.dumps({"format": CACHE_FORMAT, "name": name, "config": config_dict(config)}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def stage_path(out: str | os.PathLike, stage: Stage) -> Path:
    """``out/stages/<name>-<hash12>`` (the ``.json``/``.npz`` suffixes are added by :func:`sde_sam.save_result`)."""
    return Path(out) / "stages" / f"{stage.name}-{config_hash(stage.name, stage.config)[:12]}"


def data_checksum(data: Any) -> str:
    return hashlib.sha256(json.dumps(to_jsonable(data), sort_keys=True).encode()).hexdigest()


def git_revision() -> str | None:
    """``git describe --always --dirty`` of the source tree of this package, or ``None`` outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def load_stage(path: Path, name: str) -> StageResult:
    """Load a stage result, raising :class:`CacheCorrupted` (with the reason) when it cannot be trusted."""
    json_path, npz_path = result_paths(path)
    try:
        arrays, meta = load_result(path)
    except (json.JSONDecodeError, UnicodeDecodeError, zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError) as e:
        if isinstance(e, FileNotFoundError) and not json_path.exists():
            raise
        raise CacheCorrupted(f"{json_path.name}/{npz_path.name} unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("checksums"), dict) or "data" not in meta:
        raise CacheCorrupted(f"{json_path.name} lacks its data or checksums")
    if not isinstance(meta.get("wall_s", 0.0), (int, float)):
        raise CacheCorrupted(f"{json_path.name}: its wall_s is not a number")
    if arrays_checksum(arrays) != meta["checksums"].get("arrays"):
        raise CacheCorrupted(f"{npz_path.name}: array checksum mismatch")
    if data_checksum(meta["data"]) != meta["checksums"].get("data"):
        raise CacheCorrupted(f"{json_path.name}: data checksum mismatch")
    data = from_jsonable(meta["data"])  # non-finite numbers as floats, as every consumer reads them
    if name in CONFIGS and (bad := mismatches(name, data, unknown=False)):  # written by code of another data shape
        raise CacheCorrupted(f"{json_path.name}: its data is not of the stage's type ({'; '.join(bad[:3])})")
    return StageResult(name, data, arrays, meta, json_path, True, float(meta.get("wall_s", 0.0)))


def earlier_result(
    path: str | os.PathLike,
    log: Callable[[str], None],
    *,
    load: Callable[[Path], Any] = lambda p: from_jsonable(load_result(p)[1]),
    errors: tuple[type[BaseException], ...] = (OSError, ValueError),
    what: str = "earlier result",
) -> Any | None:
    """The one resume mechanism of the studies and stages: what an earlier (possibly interrupted) run wrote at
    ``path`` (``load(path)``), or ``None`` when nothing is there. One that ``load`` cannot trust (it raises one of
    ``errors``) is reported in one line naming it and the reason, moved aside (:func:`sde_sam._io.quarantine`: the
    suffix ``.<time>-<pid>-<i>.corrupt``, so nothing is lost) and treated as absent. The caller decides whether a
    result it finds belongs to its config."""
    path = Path(path)
    if not result_paths(path)[0].exists():
        return None
    try:
        return load(path)
    except errors as e:
        moved = quarantine(path)
        log(
            f"warning: {what} {result_paths(path)[0]} is corrupted or unreadable: {e}; recomputing (bad files kept as "
            f"{', '.join(p.name for p in moved)})"
        )
        return None


def run_stage(
    stage: Stage, out: str | os.PathLike, *, log: Callable[[str], None] = print, force: bool = False
) -> StageResult:
    """The result of ``stage``: loaded from ``out`` when a trusted one exists (:func:`earlier_result`), else
    computed and saved atomically."""
    path = stage_path(out, stage)
    if not force:
        load = lambda p: load_stage(p, stage.name)  # noqa: E731
        found = earlier_result(path, log, load=load, errors=(CacheCorrupted,), what=f"cache of stage {stage.name!r}")
        if found is not None:
            return found
    t0 = time.perf_counter()
    result = stage.fn(stage.config if isinstance(stage.config, StageConfig) else dict(stage.config))
    wall = time.perf_counter() - t0
    data = to_jsonable(result.get("data", {}))
    read = from_jsonable(data)  # the data as every consumer reads it (non-finite numbers as floats)
    bad = mismatches(stage.name, read, unknown=False) if stage.name in CONFIGS else []
    config = config_dict(stage.config)
    arrays = {k: np.asarray(v) for k, v in cast(Mapping[str, Any], result.get("arrays", {})).items()}
    meta = {
        "stage": stage.name,
        "description": stage.description,
        "config": config,
        "config_hash": config_hash(stage.name, stage.config),
        "seed": config.get("seed"),
        "git_revision": git_revision(),
        "wall_s": wall,
        "provenance": provenance(),
        "data": data,
        "checksums": {"arrays": arrays_checksum(arrays), "data": data_checksum(data)},
    }
    json_path = save_result(path, arrays, meta)
    if bad:  # kept on disk all the same (set aside, not lost, when the next run finds it)
        raise TypeError(
            f"stage {stage.name!r} returned data that departs from its type in stage_types (kept at "
            f"{json_path}): " + "; ".join(bad[:5]) + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
        )
    for hook in list(AFTER_STAGE_HOOKS):
        hook(stage.name)
    return StageResult(stage.name, read, arrays, meta, json_path, False, wall)
