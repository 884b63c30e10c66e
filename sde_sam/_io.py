"""Results on disk: one JSON file of metadata plus one ``.npz`` of arrays, written atomically (DESIGN §7).

``save_result("out/sam", arrays, meta)`` writes ``out/sam.json`` and ``out/sam.npz``; each file is first
written to a temporary file in the same folder and then moved into place with :func:`os.replace`, so a
reader never sees a half-written result and an interrupted run leaves the previous result intact.
:func:`provenance` is the block every record carries: package versions, device and time.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "CorruptResult",
    "arrays_checksum",
    "atomic_write_bytes",
    "load_result",
    "provenance",
    "quarantine",
    "result_paths",
    "save_result",
    "to_jsonable",
]


def result_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """``(json_path, npz_path)`` of a result; ``path`` may end in ``.json``/``.npz`` or carry no suffix."""
    p = Path(path)
    if p.suffix in (".json", ".npz"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".npz")


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy/JAX scalars and arrays, tuples, dataclasses and paths turned into JSON types.

    Non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"`` (JSON has no such numbers)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else str(f)
    if isinstance(obj, (str, type(None))):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "shape") and hasattr(obj, "dtype"):  # numpy or JAX array
        arr = np.asarray(obj)
        return to_jsonable(arr.item() if arr.ndim == 0 else arr.tolist())
    return repr(obj)


def from_jsonable(obj: Any) -> Any:
    """The inverse of :func:`to_jsonable` for numbers: the strings ``"nan"``, ``"inf"``, ``"-inf"`` back to floats,
    in nested dicts and lists."""
    if isinstance(obj, dict):
        return {k: from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    if obj in ("nan", "inf", "-inf"):
        return float(obj)
    return obj


def _atomic_write(target: Path, write) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are ordinary readable files
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a uniquely named temporary file in the same folder (so concurrent
    writers never share one), fsynced, mode 0644, then :func:`os.replace`."""
    _atomic_write(Path(path), lambda fh: fh.write(data))


class CorruptResult(ValueError):
    """A result on disk that cannot be trusted: unreadable, not a JSON object, or its arrays fail their checksum."""


def arrays_checksum(arrays: Mapping[str, Any]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of ``arrays`` (order independent)."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(np.asarray(arrays[k]))
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def quarantine(path: str | os.PathLike) -> list[Path]:
    """Move the files of the result at ``path`` aside as ``<name>.<time>-<pid>-<i>.corrupt`` (never overwriting an
    earlier quarantined copy) and return where they went."""
    moved = []
    stamp = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    for p in result_paths(path):
        if not p.exists():
            continue
        i = 0
        while (target := p.with_name(f"{p.name}.{stamp}-{i}.corrupt")).exists():
            i += 1
        os.replace(p, target)
        moved.append(target)
    return moved


#: The reader of each kind of result the package writes (``meta["kind"]``); any other: ``sde_sam.load_result``.
LOADERS = {
    "Runs": "sde_sam.Runs.load",
    "Paths": "sde_sam.Paths.load",
    "train_record": "sde_sam.train.TrainRecord.load",
    "Validation": "sde_sam.Validation.load",
    "ValidityMap": "sde_sam.ValidityMap.load",
}


def wrong_kind(path: str | os.PathLike, kind: object, expected: str) -> ValueError:
    """The error of a loader that met a result of another ``kind``: it names the loader that reads that kind."""
    reader = LOADERS.get(kind, "sde_sam.load_result") if isinstance(kind, str) else "sde_sam.load_result"
    return ValueError(f"{path} holds a {kind!r} result, not {expected}: read it with {reader}")


def save_result(path: str | os.PathLike, arrays: Mapping[str, Any] | None, meta: Mapping[str, Any]) -> Path:
    """Write ``meta`` as ``<path>.json`` and ``arrays`` (name -> array) as ``<path>.npz``, each atomically
    (temporary file in the same folder + :func:`os.replace`). Returns the JSON path.

    The arrays are written first, so a JSON file on disk always has its arrays beside it. The JSON records
    the array names under ``"arrays"``; ``arrays=None`` or ``{}`` writes no ``.npz``.
    """
    if not isinstance(meta, Mapping):
        raise TypeError(f"`meta` must be a mapping (a dict of JSON-able values), got {type(meta).__name__}")
    arrays = {} if arrays is None else dict(arrays)
    for name in arrays:
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"array names must be non-empty strings without '/', got {name!r}")
    np_arrays: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    for name, a in np_arrays.items():
        if a.dtype.hasobject:  # np.load refuses pickled objects: such a file could never be read back
            raise TypeError(
                f"array {name!r} holds Python objects (dtype object), which load_result cannot read back; "
                "store numbers, booleans or strings (or put the value in `meta`)"
            )
    json_path, npz_path = result_paths(path)
    if np_arrays:
        _atomic_write(npz_path, lambda fh: np.savez(fh, *(), **np_arrays))
    doc = dict(to_jsonable(dict(meta)))
    doc["arrays"] = sorted(arrays)
    doc["arrays_sha256"] = arrays_checksum(arrays)
    text = json.dumps(doc, indent=1, sort_keys=False, allow_nan=False)
    _atomic_write(json_path, lambda fh: fh.write(text.encode()))
    return json_path


def load_result(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, meta)`` of a result written by :func:`save_result`.

    Raises ``FileNotFoundError`` when there is none and :class:`CorruptResult` (a ``ValueError``) when it cannot be
    trusted: unreadable JSON or npz, JSON that is not an object, missing arrays, or arrays that fail the checksum
    stored beside them."""
    json_path, npz_path = result_paths(path)
    if not json_path.exists():
        raise FileNotFoundError(f"no result at {json_path}")
    try:
        meta = json.loads(json_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CorruptResult(f"{json_path} is not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise CorruptResult(f"{json_path} holds a JSON {type(meta).__name__}, not an object")
    names = meta.get("arrays", [])
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise CorruptResult(f'{json_path}: its "arrays" field must list array names, got {names!r}')
    stored = meta.get("arrays_sha256")
    if names and not isinstance(stored, str):
        raise CorruptResult(
            f'{json_path} lists arrays but has no "arrays_sha256" checksum: its .npz cannot be matched to it'
        )
    arrays: dict[str, np.ndarray] = {}
    if names:
        try:
            with np.load(npz_path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
            raise CorruptResult(f"{npz_path} is unreadable ({type(err).__name__}: {err})") from err
        missing = sorted(set(names) - set(arrays))
        if missing:
            raise CorruptResult(f"{npz_path} lacks arrays {missing} listed in {json_path}")
    if stored is not None and stored != arrays_checksum(arrays):
        raise CorruptResult(f"{npz_path}: the arrays fail their checksum (the file was changed or truncated)")
    return arrays, meta


def key_config(key) -> dict[str, Any]:
    """A JSON-able description of a typed PRNG key (or array of keys): ``{"impl": ..., "data": [...]}``.

    ``jax.random.wrap_key_data(np.asarray(d["data"], np.uint32), impl=d["impl"])`` rebuilds it."""
    import jax.random as jr

    return {"impl": str(jr.key_impl(key)), "data": np.asarray(jr.key_data(key)).tolist()}


@functools.cache
def _revision() -> str | None:
    """The git revision of the package's checkout (``+dirty`` with uncommitted changes), or None outside one."""
    import subprocess

    def git(*args: str) -> str:
        here = str(Path(__file__).resolve().parent)
        return subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=10, check=True).stdout

    try:
        rev, dirty = git("rev-parse", "--short", "HEAD").strip(), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return rev + ("+dirty" if dirty.strip() else "") if rev else None


def provenance() -> dict[str, Any]:
    """Versions (jax, jaxlib, numpy, sde_sam, python), device (``jax.devices()[0]`` kind and platform, count),
    host, the command line and git revision that made the record, and the UTC time: the block every saved record
    carries."""
    from importlib.metadata import version

    import jax

    from ._version import __version__

    dev = jax.devices()[0]
    return {
        "versions": {
            "jax": jax.__version__,
            "jaxlib": version("jaxlib"),
            "numpy": np.__version__,
            "sde_sam": __version__,
            "python": platform.python_version(),
        },
        "device": {"kind": dev.device_kind, "platform": dev.platform, "count": jax.device_count()},
        "host": {"machine": platform.machine(), "cpu_count": os.cpu_count()},
        "x64": bool(jax.config.read("jax_enable_x64")),
        "command": shlex.join(["python", *sys.orig_argv[1:]]),
        "revision": _revision(),
        "utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
