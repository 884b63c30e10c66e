"""Euler-Maruyama paths of an :class:`SDEModel` (DESIGN §3, §6): one jitted ``lax.scan``, paths vmapped.

Scheme, on the grid ``t_j = j * dt``::

    X_{j+1} = X_j - dt * b(X_j) + sqrt(eta * dt) * S(X_j)^{1/2} z_j

``dt = eta / r`` for a positive integer refinement ``r`` (default ``r = 1``: one SDE step per discrete
step), so the SDE grid contains every discrete step ``t = k * eta``. ``t1`` must be a whole number of
steps ``dt`` and of recording intervals ``record.every * dt``.

Keys: path ``p`` uses ``jr.split(key, num_paths)[p]``; its step ``j`` uses
``jr.split(jr.fold_in(path_key, j))`` = ``(drift_key, noise_key)``. A path is therefore a function of
``(key, p)`` alone: results are bit-identical whether the path axis runs on one device or is split over a
1-D device mesh (``mesh=``, ``shard_map`` over the path axis).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Literal

import jax
import jax.core
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, Key, PRNGKeyArray, PyTree

from .._blocks import (
    chosen_block,
    compiled_flops,
    seconds_per_item_step,
    timing_steps,
)
from .._checks import check_key, check_positive
from .._compiles import release_programs_near_map_limit
from .._estimators._observables import Record
from .._io import key_config
from .._progress import progress_bar, stride
from .._progress import total as progress_total
from .._scan import diverged, recorded_scan
from .._sharding import run_blocked
from .._training._runner import Runs, as_record
from ._sde_model import SDEModel, step_keys


@dataclasses.dataclass
class Paths(Runs):
    """SDE paths with the interface of :class:`~sde_sam.Runs` (``values[name]`` is ``(P, T)``).

    ``steps`` counts SDE steps of size ``dt``; ``times = steps * dt`` is the SDE time, comparable with the
    discrete runs' ``times = k * eta``. ``paths`` holds the parameters at every recorded time,
    leaves ``(P, T, ...)``, when ``save_paths=True`` (else ``None``). Diverged paths are frozen, recorded as
    NaN after divergence and left out of :meth:`mean` / :meth:`stderr`.
    """

    dt: float = 0.0
    paths: PyTree | None = None

    @property
    def num_paths(self) -> int:
        return self.num_runs


def check_model_and_record(model, record) -> Record:
    """Validate ``model``; accept ``record`` as a :class:`Record` or a sequence of observable names."""
    if not isinstance(model, SDEModel):
        raise TypeError(f"`model` must come from sde_sam.sde_model(...), got {type(model).__name__}")
    return as_record(record)


def simulation_config(model: SDEModel, *, dt, t1, steps, num_paths, every, divergence_threshold, **extra) -> dict:
    """The configuration block every simulation result carries (model, grid, ensemble size)."""
    return (
        {
            "problem": model.problem.name,
            "variant": model.variant.config(),
            "sampler": type(model.sampler).__name__,
            "batch_size": model.sampler.batch_size,
            "eta": model.eta,
            "dt": dt,
            "t1": float(t1),
            "steps": int(steps),
            "num_paths": int(num_paths),
            "every": every,
            "diffusion": model.diffusion.name,
            "order": model.order,
            "drift": model.drift_kind.name,
            "num_samples": model.num_samples,
            "drift_rtol": model.drift_rtol,
            "drift_rel_stderr": model.drift_rel_stderr,
            "diffusion_samples": model.diffusion_samples,
            "divergence_threshold": float(divergence_threshold),
        }
        | ({} if model.momentum is None else {"momentum": model.momentum.config()})
        | extra
    )


def _resolve_grid(eta: float, t1, dt, every: int) -> tuple[float, int]:
    if dt is None:
        dt = eta
    check_positive("dt", dt)
    if (
        isinstance(t1, bool)
        or not isinstance(t1, (int, float, np.integer, np.floating))
        or not math.isfinite(t1)
        or t1 < 0
    ):
        raise ValueError(f"`t1` must be a finite number in [0, inf), got {t1!r}")
    ratio = eta / dt
    r = round(ratio)
    if r < 1 or abs(ratio - r) > 1e-9 * max(1.0, ratio):
        raise ValueError(
            f"`dt`={dt!r} must be eta/r for a positive integer r (eta={eta}); valid: {eta}, {eta / 2}, {eta / 4}, ..."
        )
    dt = eta / r
    steps_f = t1 / dt
    steps = round(steps_f)
    if abs(steps_f - steps) > 1e-7 * max(1.0, steps_f):
        raise ValueError(f"`t1`={t1!r} must be a whole number of steps dt={dt} (t1/dt = {steps_f})")
    if steps % every:
        raise ValueError(
            f"`t1`={t1!r} is {steps} steps of dt={dt}, not a multiple of record.every={every}; "
            f"valid t1: multiples of {every * dt}"
        )
    return dt, steps


def simulate(
    model: SDEModel,
    *,
    t1: float,
    num_paths: int = 1,
    key: PRNGKeyArray,
    record: Record | Sequence[str] = ("loss",),
    dt: float | None = None,
    init_params: PyTree | None = None,
    save_paths: bool = False,
    mesh: Mesh | None = None,
    divergence_threshold: float = 1e12,
    paths_per_block: int | Literal["rule", "calibrate"] | None = None,
    progress: bool = True,
) -> Paths:
    """Simulate ``num_paths`` Euler-Maruyama paths of ``model`` on ``[0, t1]`` (see the module docstring).

    Arguments:
        t1: final SDE time (``t = k * eta`` after ``k`` discrete steps).
        record: a :func:`sde_sam.observables` record (or a sequence of built-in names); observables are
            recorded at ``t = 0, every*dt, 2*every*dt, ..., t1``.
        dt: step size, ``eta / r`` for a positive integer ``r`` (default ``eta``).
        init_params: start of every path (default ``problem.init_params``); must match its structure.
        save_paths: also return the parameters at every recorded time (``Paths.paths``).
        mesh: a 1-D :class:`jax.sharding.Mesh`; the path axis is split over its devices
            (``num_paths`` must be a multiple of its size). Results equal the single-device ones bit for bit.
        divergence_threshold: a path diverges when ``||x||^2`` exceeds it or turns non-finite.
        paths_per_block: paths advanced together (vmapped); blocks run one after another (``lax.map``).
            Default (``None``): every path at once for small calls; calls with more than ``1e12`` flops of
            work on a CPU time the candidate blocks and take the fastest (``"calibrate"``: always; kept per
            process, and on disk in the folder ``SDE_SAM_BLOCK_CACHE`` names, if set, so later calls on the
            machine take the same block); the others take the flop rule (``"rule"``: always; about ``4e8``
            flops of work per block and step on a CPU, at most 512 paths). See :mod:`sde_sam._blocks`. The
            block is recorded as ``config["paths_per_block"]``. Each path's arithmetic depends only on its key and the
            block size, so runs with the same ``paths_per_block`` are bit-identical on any number of
            devices (with a different block size, XLA may order a matmul differently: ~1 ulp).
        progress: show a progress bar (tqdm, on stderr) when the call runs longer than 2 seconds.
    """
    record = check_model_and_record(model, record)
    check_positive("num_paths", num_paths, integer=True)
    check_key(key)
    check_positive("divergence_threshold", divergence_threshold)
    dt, steps = _resolve_grid(float(model.eta), t1, dt, record.every)
    problem = model.problem
    if init_params is not None:
        problem.check_params(init_params, "init_params")
        problem = dataclasses.replace(problem, init_params=init_params)  # validates (finite, matches loss_fn)
        model = dataclasses.replace(model, problem=problem)
    record = record.bind(problem, model.variant, model.sampler)  # observables that take the variant get it here
    record.check(problem)
    if mesh is not None:
        if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
            raise ValueError("`mesh` must be a 1-D jax.sharding.Mesh (one axis for the paths)")
        if num_paths % mesh.size:
            raise ValueError(f"`num_paths`={num_paths} must be a multiple of the mesh size {mesh.size}")
    per_device = num_paths // (1 if mesh is None else mesh.size)
    check_block_choice(paths_per_block)
    if paths_per_block is None or isinstance(paths_per_block, str):
        block = simulation_block(model, dt, per_device, steps, paths_per_block, progress)
    else:
        block = paths_per_block
    if per_device % block:
        raise ValueError(
            f"`paths_per_block`={paths_per_block} must divide the paths per device ({per_device} = num_paths / devices)"
        )

    path_keys = jr.split(key, num_paths)
    num_segments = steps // record.every
    args = program_args(model, path_keys, num_segments, record, dt, save_paths, divergence_threshold, block)
    start = time.perf_counter()
    steps_total = progress_total(num_segments, record.every, num_paths // block)
    release_programs_near_map_limit()  # before compiling: a process of thousands of programs crashes XLA
    with progress_bar(steps_total, f"simulate {model.variant.name}", enabled=progress) as bar:
        out = _simulate_jit(*args, bar) if mesh is None else _simulate_sharded(mesh, *args, bar)
        out = jax.block_until_ready(out)
    wall = time.perf_counter() - start
    values, div, div_step, final, saved = out
    record.check_values(values)
    steps_arr = np.arange(num_segments + 1) * record.every
    return Paths(
        steps=steps_arr,
        times=steps_arr * dt,
        values={k: np.asarray(v) for k, v in values.items()},
        diverged=np.asarray(div),
        diverged_step=np.asarray(div_step),
        final_params=final,
        config=simulation_config(
            model,
            dt=dt,
            t1=t1,
            steps=steps,
            num_paths=num_paths,
            every=record.every,
            divergence_threshold=divergence_threshold,
            devices=1 if mesh is None else int(mesh.size),
            key=key_config(key),
            paths_per_block=int(block),
        ),
        wall_time_s=wall,
        dt=dt,
        paths=saved if save_paths else None,
    )


def program_args(
    model: SDEModel,
    path_keys: Key[Array, " paths"],
    num_segments: int,
    record: Record,
    dt: float,
    save_paths: bool,
    threshold: float,
    block: int,
) -> tuple[SDEModel, PyTree, Array, int, Array, tuple[Array, Array], Record, bool, float, int]:
    """The arguments of the compiled simulation (``_paths``) for ``num_segments`` recorded segments of
    ``record.every`` steps. Static: the model's structure, the number of segments, the record's observables, the
    block. Traced: the model's numbers, ``dt``, ``sqrt(eta dt)`` and the steps per segment, so that the refinements
    of ``dt`` at the same recorded times (``dt / 2``, ``2 * every``) share one program."""
    return (
        model.traced(),
        model.problem.init_params,
        path_keys,
        int(num_segments),
        jnp.asarray(record.every, jnp.asarray(0).dtype),
        step_sizes(model, dt),
        dataclasses.replace(record, every=1),  # `every` is the traced argument above
        bool(save_paths),
        float(threshold),
        int(block),
    )


def path_step_flops(model: SDEModel, dt: float) -> float:
    """XLA's flop count of one Euler-Maruyama step of one path (compiled, not run)."""
    x = jax.tree_util.tree_map(lambda a: a[None], model.problem.init_params)
    keys = jr.split(jr.key(0), 1)
    sizes = step_sizes(model, dt)
    step = lambda m, xs, ks: jax.vmap(lambda p, k: em_step(m, p, k, 0, *sizes))(xs, ks)  # noqa: E731
    return compiled_flops(step, model, x, keys, cache_key="em_step")  # one program for every eta, rho and dt


BLOCK_CHOICES = ("rule", "calibrate")


def check_block_choice(paths_per_block: object) -> None:
    """``paths_per_block`` is ``None``, ``"rule"``, ``"calibrate"`` or a positive integer."""
    if isinstance(paths_per_block, str) and paths_per_block not in BLOCK_CHOICES:
        raise ValueError(
            f"`paths_per_block` must be a positive integer, None, 'rule' or 'calibrate', got {paths_per_block!r}"
        )
    if not isinstance(paths_per_block, str) and paths_per_block is not None:
        check_positive("paths_per_block", paths_per_block, integer=True)


def simulation_block(
    model: SDEModel,
    dt: float,
    per_device: int,
    steps: int,
    choice: str | None,
    progress: bool = False,
    work_paths: int | None = None,
) -> int:
    """The block of paths for ``per_device`` paths of ``steps`` steps (:mod:`sde_sam._blocks`); ``work_paths``:
    the paths per device the call advances with this block in all (default ``per_device``; more for chunks).

    ``choice``: ``"rule"`` (the flop rule), ``"calibrate"`` (time the candidates), ``None`` (the rule for calls
    with less than :data:`~sde_sam._blocks.CALIBRATE_FLOPS` of work, else calibrate; every path at once for
    small calls)."""
    return chosen_block(
        per_device,
        model.problem.num_examples * model.problem.dim,
        (work_paths or per_device) * steps,
        choice,
        lambda: path_step_flops(model, dt),
        lambda block, flops: time_paths(model, dt, block, flops),
        lambda: step_program(model, dt),
        progress=progress,
        desc="calibrate paths_per_block",
    )


def step_program(model: SDEModel, dt: float) -> str:
    """The lowered text of one Euler-Maruyama step of one path: identifies the computation (shapes, dtypes,
    variant, drift, diffusion), not the data."""
    x = jax.tree_util.tree_map(lambda a: a[None], model.problem.init_params)
    keys = jr.split(jr.key(0), 1)
    step = lambda m, xs, ks, sz: jax.vmap(lambda p, k: em_step(m, p, k, 0, *sz))(xs, ks)  # noqa: E731
    return jax.jit(step).lower(model, x, keys, step_sizes(model, dt)).as_text()  # eta, rho and dt as arguments


def time_paths(model: SDEModel, dt: float, block: int, flops: float) -> float:
    """Seconds per path-step of ``block`` paths advanced together by a compiled scan of
    :func:`~sde_sam._blocks.timing_steps` Euler-Maruyama steps (compilation excluded)."""
    steps = timing_steps(block, flops)
    x = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (block, *jnp.shape(a))), model.problem.init_params)
    keys = jr.split(jr.key(0), block)

    sizes = step_sizes(model, dt)

    def run(m, xs, ks):
        def body(xs, j):
            return jax.vmap(lambda p, k: em_step(m, p, k, j, *sizes))(xs, ks), None

        return jax.lax.scan(body, xs, jnp.arange(steps))[0]

    compiled = jax.jit(run).lower(model, x, keys).compile()
    return seconds_per_item_step(lambda: compiled(model, x, keys), block, steps)


def step_sizes(model: SDEModel, dt: float) -> tuple[Array, Array]:
    """``(dt, sqrt(eta dt))`` as arrays of the parameters' dtype (``sqrt`` taken in double precision on the host):
    traced by the compiled simulation, so one program serves every ``eta`` and ``dt``."""
    dtype = jax.tree_util.tree_leaves(model.problem.init_params)[0].dtype
    return jnp.asarray(dt, dtype), jnp.asarray(math.sqrt(float(model.eta) * dt), dtype)


def em_step(model: SDEModel, params: PyTree, path_key: PRNGKeyArray, j, dt, noise_scale=None) -> PyTree:
    """``X - dt b(X) + sqrt(eta dt) S^{1/2} z`` for step ``j`` of the path with key ``path_key`` (``noise_scale``:
    ``sqrt(eta dt)``, computed from the numbers ``model.eta`` and ``dt`` when not given)."""
    drift_key, noise_key = step_keys(path_key, j)
    b = model.drift(params, drift_key)
    if noise_scale is None:  # from numbers in double precision; from traced values (a model passed to jit) in JAX
        traced = isinstance(model.eta, jax.core.Tracer) or isinstance(dt, jax.core.Tracer)
        noise_scale = jnp.sqrt(model.eta * dt) if traced else math.sqrt(model.eta * dt)
    if model.diffusion.vanishes:
        return jax.tree_util.tree_map(lambda p, bb: p - dt * bb, params, b)
    z = model.diffusion_sample(params, noise_key)
    return jax.tree_util.tree_map(lambda p, bb, zz: p - dt * bb + noise_scale * zz, params, b, z)


def _paths(model, params0, path_keys, num_segments, every, dt, record, save_paths, threshold, block, bar=None):
    def one_path(path_key):
        def step(_, carry):
            params, is_div, div_step, j, rest = carry
            new = em_step(model, params, path_key, j, *dt)  # dt: (dt, sqrt(eta dt)), traced
            now_div = diverged(new, threshold) & ~is_div
            stop = is_div | now_div
            params = jax.tree_util.tree_map(lambda a, b: jnp.where(stop, b, a), new, params)
            return params, stop, jnp.where(now_div, j + 1, div_step), j + 1, rest

        def advance(carry):  # `every` traced: the refinements of dt at the same recorded times share one program
            return jax.lax.fori_loop(0, every, step, carry)

        return recorded_scan(
            advance, record, model.problem, params0, (), num_segments, save_paths, bar, stride(num_segments, every)
        )

    num = path_keys.shape[0]
    if block == num:
        return jax.vmap(one_path)(path_keys)
    out = jax.lax.map(jax.vmap(one_path), path_keys.reshape(num // block, block))
    return jax.tree_util.tree_map(lambda a: a.reshape(num, *a.shape[2:]), out)


_STATIC = ("num_segments", "record", "save_paths", "threshold", "block")
_simulate_jit = jax.jit(_paths, static_argnames=_STATIC)


def _simulate_sharded(
    mesh, model, params0, path_keys, num_segments, every, dt, record, save_paths, threshold, block, bar=None
):
    """The path axis split over ``mesh`` (one or several processes), ``block`` paths at a time per device."""
    args = (model, params0, path_keys, num_segments, every, dt, record, save_paths, threshold, block, bar)
    return run_blocked(_simulate_jit, args, 2, mesh=mesh, block=block)
