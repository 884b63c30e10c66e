"""Scaling out: device meshes over one or several processes, sharded paths/runs and streaming moments.

* :func:`initialize` starts JAX's distributed runtime (``jax.distributed``) from arguments or the
  environment (``SDE_SAM_COORDINATOR``, ``SDE_SAM_NUM_PROCESSES``, ``SDE_SAM_PROCESS_ID``, or JAX's
  ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``); on CPU it selects Gloo collectives.
* :func:`make_mesh` is a 1-D mesh over every device of every process.
* :func:`simulate` / :func:`run_discrete` are :func:`sde_sam.simulate` / :func:`sde_sam.run_discrete` with the
  path/run axis split over that mesh (every process gets all paths back).
* :func:`simulate_moments` streams the path ensemble in chunks and keeps running moments (Welford/Chan
  merging), so ``1e5``-``1e6`` paths run in bounded memory; the per-chunk reductions run as collectives.
* :func:`save` writes a result on process 0 only (atomically).

Keys: path ``p`` uses ``jr.split(key, num_paths)[p]`` exactly as :func:`sde_sam.simulate`, and each path is
advanced ``paths_per_block`` at a time on its device, so per-path values are bit-identical for any number of
devices, processes or chunks (given the same ``paths_per_block``). Means and variances are reduced across
devices in float32 and merged across chunks in float64: equal to the single-device numbers within float
tolerance (summation order differs), not bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh
from jaxtyping import PRNGKeyArray, PyTree
from tqdm.auto import tqdm

from .._checks import check_key, check_positive
from .._estimators._observables import Record
from .._io import key_config, save_result, to_jsonable
from .._sde._sde_model import SDEModel
from .._sde._simulate import (
    Paths,
    _resolve_grid,
    _simulate_jit,
    check_block_choice,
    check_model_and_record,
    program_args,
    simulation_block,
    simulation_config,
)
from .._sde._simulate import simulate as _simulate
from .._sharding import check_mesh, run_blocked
from .._training._runner import Runs
from .._training._runner import run_discrete as _run_discrete

ENV = {
    "coordinator": ("SDE_SAM_COORDINATOR", "JAX_COORDINATOR_ADDRESS"),
    "num_processes": ("SDE_SAM_NUM_PROCESSES", "JAX_NUM_PROCESSES"),
    "process_id": ("SDE_SAM_PROCESS_ID", "JAX_PROCESS_ID"),
}


def _from_env(name: str) -> str | None:
    for var in ENV[name]:
        value = os.environ.get(var)
        if value not in (None, ""):
            return value
    return None


def _as_int(name: str, value: Any, low: int) -> int:
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}") from None
    if isinstance(value, (bool, float)) or out < low:
        raise ValueError(f"`{name}` must be an integer >= {low}, got {value!r}")
    return out


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    cpu_collectives: str | None = "gloo",
    timeout_s: int = 300,
) -> bool:
    """Start ``jax.distributed`` for a multi-process run; ``False`` (nothing done) for a single process.

    Each argument left ``None`` is read from ``SDE_SAM_COORDINATOR`` / ``SDE_SAM_NUM_PROCESSES`` /
    ``SDE_SAM_PROCESS_ID`` (else ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``).
    When none of the three is set anywhere this is a single-process run and nothing happens; otherwise all
    three are required. Call it before any other JAX work. ``cpu_collectives`` (``"gloo"`` by default,
    ``None`` to leave JAX's setting) is the CPU backend's cross-process collectives implementation.
    """
    coordinator = _from_env("coordinator") if coordinator is None else coordinator
    procs: str | int | None = _from_env("num_processes") if num_processes is None else num_processes
    pid: str | int | None = _from_env("process_id") if process_id is None else process_id
    given = {"coordinator": coordinator, "num_processes": procs, "process_id": pid}
    if all(v is None for v in given.values()):
        return False
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ValueError(
            f"multi-process run needs `coordinator`, `num_processes` and `process_id`; missing {missing} "
            f"(arguments or {', '.join(ENV[m][0] for m in missing)})"
        )
    if not isinstance(coordinator, str) or ":" not in coordinator:
        raise ValueError(f"`coordinator` must be 'host:port', got {coordinator!r}")
    num_processes = _as_int("num_processes", procs, 1)
    process_id = _as_int("process_id", pid, 0)
    if process_id >= num_processes:
        raise ValueError(
            f"`process_id` must be in [0, {num_processes - 1}] (num_processes={num_processes}), got {process_id}"
        )
    if cpu_collectives is not None:
        if cpu_collectives not in ("gloo", "mpi"):
            raise ValueError(f"`cpu_collectives` must be 'gloo', 'mpi' or None, got {cpu_collectives!r}")
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    if jax.distributed.is_initialized():
        return True
    jax.distributed.initialize(
        coordinator_address=coordinator,
        num_processes=num_processes,
        process_id=process_id,
        local_device_ids=local_device_ids,
        initialization_timeout=int(timeout_s),
    )
    return True


def shutdown() -> None:
    """Stop ``jax.distributed`` (no-op when it was not started)."""
    if jax.distributed.is_initialized():
        jax.distributed.shutdown()


def is_main_process() -> bool:
    """``True`` on process 0 (the one that writes results)."""
    return jax.process_index() == 0


def launch_local(
    command: Sequence[str], num_processes: int = 2, *, env: dict | None = None, cwd=None, timeout: float | int = 600.0
) -> list[subprocess.CompletedProcess]:
    """Run ``command`` as ``num_processes`` processes of one distributed job on this machine.

    The coordinator is a free port on ``127.0.0.1``; process ``i`` runs ``command`` followed by ``--coordinator
    127.0.0.1:PORT --num-processes N --process-id i`` (the flags of ``python -m sde_sam.parallel_cli``, passed on to
    :func:`initialize`). Waits for all of them, ``timeout`` seconds in total, and kills any still running on the way
    out (error or timeout). Returns one completed process (text stdout and stderr) per process id.
    """
    num_processes = _as_int("num_processes", num_processes, 1)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs: list[subprocess.Popen] = []
    try:
        for pid in range(num_processes):
            argv = [
                *command,
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                str(num_processes),
                "--process-id",
                str(pid),
            ]
            procs.append(
                subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            )
        deadline = time.monotonic() + timeout
        outs = [p.communicate(timeout=max(1.0, deadline - time.monotonic())) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [
        subprocess.CompletedProcess(p.args, p.returncode, out, err) for p, (out, err) in zip(procs, outs, strict=True)
    ]


def make_mesh(devices: Sequence[Any] | None = None, axis_name: str = "paths") -> Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process, ``jax.devices()``)."""
    devices = jax.devices() if devices is None else list(devices)
    if len(devices) == 0 or not all(isinstance(d, jax.Device) for d in devices):
        raise ValueError("`devices` must be a non-empty sequence of jax devices")
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"`axis_name` must be a non-empty string, got {axis_name!r}")
    return Mesh(np.asarray(devices), (axis_name,))


def simulate(model: SDEModel, *, mesh: Mesh | None = None, **kwargs) -> Paths:
    """:func:`sde_sam.simulate` with the paths split over ``mesh`` (default :func:`make_mesh`); every
    process gets all paths back. Same arguments; ``num_paths`` must be a multiple of the mesh size."""
    return _simulate(model, mesh=make_mesh() if mesh is None else mesh, **kwargs)


def run_discrete(problem, variant, sampler, *, mesh: Mesh | None = None, **kwargs) -> Runs:
    """:func:`sde_sam.run_discrete` with the runs split over ``mesh`` (default :func:`make_mesh`; runs are
    padded to a multiple of its size); every process gets all runs back. Same arguments otherwise."""
    return _run_discrete(problem, variant, sampler, mesh=make_mesh() if mesh is None else mesh, **kwargs)


# -- streaming moments ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Moments:
    """Moments of the recorded observables over the paths that never diverged, at ``times``.

    ``mean[name]``, ``var[name]`` (``ddof=1``), ``stderr[name]`` (``sqrt(var / count)``): shape ``(T,)``.
    ``quantiles[name]``: shape ``(len(quantile_levels), T)``, from the ``quantile_count`` non-diverged paths
    ``p`` with ``p % quantile_stride == 0`` (all paths when ``quantile_stride == 1``).
    """

    steps: np.ndarray
    times: np.ndarray
    mean: dict[str, np.ndarray]
    var: dict[str, np.ndarray]
    stderr: dict[str, np.ndarray]
    quantiles: dict[str, np.ndarray]
    quantile_levels: tuple[float, ...]
    quantile_stride: int
    quantile_count: int
    count: int
    num_paths: int
    num_diverged: int
    config: dict
    wall_time_s: float


@dataclasses.dataclass(frozen=True)
class _ChunkStats:
    """Per-chunk count, mean and centred sum of squares (collectives over the sharded path axis)."""

    names: tuple[str, ...]
    stride: int

    def __call__(self, out, n_valid):
        values, div = out[0], out[1]
        total = div.shape[0]
        valid = jnp.arange(total) < n_valid
        keep = valid & ~div
        count = jnp.sum(keep)
        means, m2s, samples = {}, {}, {}
        for name in self.names:
            x = values[name]
            mean = jnp.sum(jnp.where(keep[:, None], x, 0), axis=0) / jnp.maximum(count, 1).astype(x.dtype)
            m2s[name] = jnp.sum(jnp.where(keep[:, None], jnp.square(x - mean), 0), axis=0)
            means[name] = mean
            samples[name] = x[:: self.stride]
        return count, jnp.sum(valid & div), means, m2s, samples, keep[:: self.stride]


def _merge(n_a, mean_a, m2_a, n_b, mean_b, m2_b):
    """Chan et al. merge of two (count, mean, M2) summaries (float64)."""
    n = n_a + n_b
    if n_b == 0:
        return n_a, mean_a, m2_a
    if n_a == 0:
        return n_b, mean_b, m2_b
    delta = mean_b - mean_a
    return n, mean_a + delta * (n_b / n), m2_a + m2_b + np.square(delta) * (n_a * n_b / n)


def _stride_for(chunk: int, num_paths: int, quantile_paths: int) -> int:
    need = max(1, math.ceil(num_paths / quantile_paths))
    return next(d for d in range(need, chunk + 1) if chunk % d == 0) if need <= chunk else chunk


def simulate_moments(
    model: SDEModel,
    *,
    t1: float,
    num_paths: int,
    key: PRNGKeyArray,
    record: Record | Sequence[str] = ("loss",),
    chunk_paths: int | None = None,
    dt: float | None = None,
    init_params: PyTree | None = None,
    mesh: Mesh | None = None,
    paths_per_block: int | Literal["rule", "calibrate"] | None = None,
    quantiles: Sequence[float] = (),
    quantile_paths: int = 4096,
    divergence_threshold: float = 1e12,
    progress: bool = True,
) -> Moments:
    """Mean, variance and standard error of each observable at each recorded time over ``num_paths`` paths.

    The paths (keys ``jr.split(key, num_paths)``, as :func:`sde_sam.simulate`) run ``chunk_paths`` at a time
    (default ``min(num_paths, 65536)``; the last chunk is padded and masked), each chunk split over ``mesh``
    (default :func:`make_mesh`: all devices of all processes) and reduced there to ``(count, mean, M2)`` by
    collectives; chunks are merged on the host in float64 (Chan et al.), so memory does not grow with
    ``num_paths`` (apart from 8 bytes of key per path). Diverged paths are counted, not averaged in.

    ``quantiles``: levels in ``[0, 1]`` estimated from a fixed subset of at most ``~quantile_paths`` paths
    (every ``quantile_stride``-th path; exact when ``num_paths <= quantile_paths``). ``progress``: a bar over
    the chunks (tqdm, on stderr) once the call runs longer than 2 seconds.
    ``paths_per_block``: paths vmapped together on a device (default, ``"rule"`` and ``"calibrate"``: as
    :func:`sde_sam.simulate`, on the per-device chunk, the calibration counting the work of all chunks); with the
    same value :func:`sde_sam.simulate` gives the same per-path values bit for bit.
    """
    record = check_model_and_record(model, record)
    check_key(key)
    check_positive("num_paths", num_paths, integer=True)
    if num_paths < 2:
        raise ValueError(
            f"`num_paths` must be at least 2 (a variance and standard error need 2 paths), got {num_paths}"
        )
    chunk = min(num_paths, 65536) if chunk_paths is None else chunk_paths
    check_positive("chunk_paths", chunk, integer=True)
    chunk = min(chunk, num_paths)
    check_positive("quantile_paths", quantile_paths, integer=True)
    check_positive("divergence_threshold", divergence_threshold)
    levels = tuple(float(q) for q in quantiles)
    if any(not (0.0 <= q <= 1.0) for q in levels):
        raise ValueError(f"`quantiles` must be levels in [0, 1], got {tuple(quantiles)!r}")
    mesh = make_mesh() if mesh is None else mesh
    check_mesh(mesh)
    check_block_choice(paths_per_block)
    choice = paths_per_block if isinstance(paths_per_block, str) else None
    explicit = None if paths_per_block is None or isinstance(paths_per_block, str) else int(paths_per_block)
    if explicit is not None and chunk % (mesh.size * explicit):
        raise ValueError(
            f"`chunk_paths`={chunk} must be a multiple of devices * paths_per_block = {mesh.size} * {paths_per_block}"
        )
    dt, steps = _resolve_grid(float(model.eta), t1, dt, record.every)
    problem = model.problem
    if init_params is not None:
        problem.check_params(init_params, "init_params")
        problem = dataclasses.replace(problem, init_params=init_params)
        model = dataclasses.replace(model, problem=problem)
    record.check(problem)

    num_segments = steps // record.every
    stride = _stride_for(chunk, num_paths, quantile_paths)
    stats = _ChunkStats(record.names, stride)
    key_data = np.asarray(jr.key_data(jr.split(key, num_paths)))
    impl = jr.key_impl(key)
    num_chunks = math.ceil(num_paths / chunk)
    if explicit is not None:
        block = explicit
    elif chunk % mesh.size == 0:  # sde_sam._blocks on each device's share
        work = num_chunks * (chunk // mesh.size)
        block = simulation_block(model, dt, chunk // mesh.size, steps, choice, progress, work_paths=work)
    else:
        block = math.ceil(chunk / mesh.size)

    start = time.perf_counter()
    n_tot, num_div = 0, 0
    mean = {name: np.zeros(num_segments + 1) for name in record.names}
    m2 = {name: np.zeros(num_segments + 1) for name in record.names}
    kept = {name: [] for name in record.names}
    bar_kw: dict[str, Any] = {"desc": "moments (chunks)", "delay": 2.0, "leave": False}
    if not progress:  # `disable` is left unset otherwise, so that TQDM_DISABLE=1 also silences the bar
        bar_kw["disable"] = True
    bar = tqdm(range(num_chunks), **bar_kw)
    for c in bar:
        lo = c * chunk
        part = key_data[lo : lo + chunk]
        n_valid = part.shape[0]
        if n_valid < chunk:
            part = np.concatenate([part, np.repeat(part[:1], chunk - n_valid, axis=0)])
        keys = jr.wrap_key_data(jnp.asarray(part), impl=impl)
        args = program_args(model, keys, num_segments, record, dt, False, divergence_threshold, block)
        cnt, ndiv, means, m2s, samples, keep = run_blocked(
            _simulate_jit, args, 2, mesh=mesh, block=block, reduce=stats, reduce_args=(jnp.asarray(n_valid),)
        )
        cnt = int(cnt)
        num_div += int(ndiv)
        for name in record.names:
            _, mean[name], m2[name] = _merge(
                n_tot, mean[name], m2[name], cnt, means[name].astype(np.float64), m2s[name].astype(np.float64)
            )
            if levels:
                kept[name].append(samples[name][keep])
        n_tot += cnt
    wall = time.perf_counter() - start
    if n_tot < 2:
        raise ValueError(f"{num_paths - n_tot} of {num_paths} paths diverged: a variance needs at least 2 kept paths")
    var = {k: v / (n_tot - 1) for k, v in m2.items()}
    qs, q_count = {}, 0
    if levels:
        for name in record.names:
            sample = np.concatenate(kept[name]).astype(np.float64)
            q_count = sample.shape[0]
            qs[name] = (
                np.quantile(sample, levels, axis=0) if q_count else np.full((len(levels), num_segments + 1), np.nan)
            )
    steps_arr = np.arange(num_segments + 1) * record.every
    return Moments(
        steps=steps_arr,
        times=steps_arr * dt,
        mean=mean,
        var=var,
        stderr={k: np.sqrt(v / n_tot) for k, v in var.items()},
        quantiles=qs,
        quantile_levels=levels,
        quantile_stride=stride,
        quantile_count=q_count,
        count=n_tot,
        num_paths=int(num_paths),
        num_diverged=num_div,
        config=simulation_config(
            model,
            dt=dt,
            t1=t1,
            steps=steps,
            num_paths=num_paths,
            every=record.every,
            divergence_threshold=divergence_threshold,
            chunk_paths=int(chunk),
            paths_per_block=int(block),
            devices=int(mesh.size),
            processes=int(jax.process_count()),
            key=key_config(key),
        ),
        wall_time_s=wall,
    )


# -- writing results -----------------------------------------------------------------------------------


def result_arrays(result: Moments | Runs) -> dict[str, np.ndarray]:
    """The arrays of a :class:`Moments` or :class:`~sde_sam.Runs` as a flat ``name -> array`` dict."""
    out = {"steps": np.asarray(result.steps), "times": np.asarray(result.times)}
    if isinstance(result, Moments):
        for field in ("mean", "var", "stderr", "quantiles"):
            out |= {f"{field}.{k}": np.asarray(v) for k, v in getattr(result, field).items()}
        return out
    out |= {f"values.{k}": np.asarray(v) for k, v in result.values.items()}
    return out | {"diverged": np.asarray(result.diverged), "diverged_step": np.asarray(result.diverged_step)}


def save(
    path: str | os.PathLike, result: Moments | Runs, meta: dict | None = None, arrays: dict | None = None
) -> Path | None:
    """Write ``result`` as ``<path>.json`` (metadata) + ``<path>.npz`` (arrays) on process 0 only.

    ``meta`` / ``arrays``: extra metadata and arrays to store alongside.
    Every process may call it (they hold the same reduced result); the others return ``None``. Each file is
    written to a temporary file and moved into place (``os.replace``), so readers never see a partial file.
    """
    if not isinstance(result, (Moments, Runs)):
        raise TypeError(f"`result` must be a Moments or Runs, got {type(result).__name__}")
    if not is_main_process():
        return None
    info = {
        "config": result.config,
        "wall_time_s": result.wall_time_s,
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "backend": jax.default_backend(),
        "jax": jax.__version__,
    }
    if isinstance(result, Moments):
        info |= {
            "count": result.count,
            "num_paths": result.num_paths,
            "num_diverged": result.num_diverged,
            "quantile_levels": result.quantile_levels,
            "quantile_stride": result.quantile_stride,
            "quantile_count": result.quantile_count,
        }
    arrays = result_arrays(result) | {k: np.asarray(v) for k, v in (arrays or {}).items()}
    return save_result(path, arrays, to_jsonable(info | dict(meta or {})))
