"""Discrete runs of a variant: ``R`` independent runs (vmap over keys) of ``K`` steps in one jitted scan."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Int, Key, PRNGKeyArray, PyTree

from .._blocks import (
    cached_flops,
    chosen_block,
    seconds_per_item_step,
    timing_steps,
)
from .._checks import check_positive
from .._compiles import release_programs_near_map_limit
from .._cost import step_cost, step_program
from .._ensemble import Ensemble
from .._estimators._observables import Record, observables
from .._io import key_config, load_result, provenance, save_result, wrong_kind
from .._problems._problem import Problem, resolve_dtype
from .._problems._sampler import Sampler, check_is_sampler
from .._progress import progress_bar, stride
from .._progress import total as progress_total
from .._scan import diverged, recorded_scan
from .._sharding import check_mesh, run_blocked
from .._variants._svag import check_svag, svag_gradient
from .._variants._variant import Variant
from ._momentum import Momentum, as_momentum


def as_record(record: Record | Sequence[str]) -> Record:
    """``record`` as a :class:`Record`: a record is kept, a sequence of observable names becomes
    ``observables(*names)`` (recorded at every step)."""
    if isinstance(record, Record):
        return record
    if isinstance(record, str) or not isinstance(record, Sequence):
        raise TypeError("`record` must be a sde_sam.observables(...) Record or a sequence of observable names")
    return observables(*record)


def check_sampler(sampler: Sampler, problem: Problem) -> None:
    check_is_sampler(sampler)
    sampler.check(problem.num_examples)


def check_schedule(schedule, steps: int) -> None:
    """The multipliers ``schedule(k)``, ``k < steps``, are finite and ``>= 0`` (a negative one would run gradient
    ascent silently); evaluated once, before any compilation of the run."""
    try:
        values = np.asarray(jax.vmap(lambda k: jnp.asarray(schedule(k), jnp.float32))(jnp.arange(max(int(steps), 1))))
    except Exception as err:
        raise TypeError(f"`schedule(step)` failed on a traced integer step: {err}") from err
    if values.shape != (max(int(steps), 1),):
        raise TypeError(f"`schedule(step)` must return one number per step, got shape {values.shape[1:]}")
    bad = np.flatnonzero(~np.isfinite(values) | (values < 0))
    if bad.size:
        k = int(bad[0])
        raise ValueError(
            f"`schedule` must give a finite learning-rate multiplier >= 0 at every step, got {values[k]} at step {k}"
        )


@dataclasses.dataclass
class Runs(Ensemble):
    """Recorded observables of ``R`` runs: ``values[name]`` has shape ``(R, T)`` at ``steps``.

    Runs that diverged (``diverged[r]``) are frozen at their last finite iterate and their records after
    divergence are NaN; :meth:`mean` and :meth:`stderr` use the runs that never diverged, so a diverged
    run is counted (``num_diverged``), never averaged in.
    """

    steps: np.ndarray
    times: np.ndarray
    values: dict[str, np.ndarray]
    diverged: np.ndarray
    diverged_step: np.ndarray
    final_params: PyTree
    config: dict
    wall_time_s: float
    saved_params: PyTree | None = None

    _TREES = ("final_params", "saved_params", "paths")

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>.json`` (config with key and seed, provenance, wall time) and ``<path>.npz`` (every
        array, parameter leaves included), each atomically; returns the JSON path. :meth:`load` reads it."""
        arrays: dict[str, Any] = {"steps": self.steps, "times": self.times, "diverged": self.diverged}
        arrays["diverged_step"] = self.diverged_step
        arrays |= {f"value.{name}": v for name, v in self.values.items()}
        trees: dict[str, list[str]] = {}
        for field in self._TREES:
            tree = getattr(self, field, None)
            if tree is None:
                continue
            leaves = jax.tree_util.tree_leaves_with_path(tree)
            trees[field] = [jax.tree_util.keystr(p) for p, _ in leaves]
            arrays |= {f"{field}.{i}": np.asarray(leaf) for i, (_, leaf) in enumerate(leaves)}
        scalars = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if isinstance(getattr(self, f.name), float)
        }
        meta = {"kind": type(self).__name__, "config": self.config, "scalars": scalars, "trees": trees}
        return save_result(path, arrays, meta | {"provenance": provenance()})

    @classmethod
    def load(cls, path: str | os.PathLike, like: PyTree | None = None) -> Runs:
        """Read a result written by :meth:`save`. Parameter pytrees come back in the structure of ``like``
        (e.g. ``problem.init_params``) when given, else as a dict from parameter path to array."""
        arrays, meta = load_result(path)
        if meta.get("kind") != cls.__name__:
            raise wrong_kind(path, meta.get("kind"), cls.__name__)
        values = {k.removeprefix("value."): v for k, v in arrays.items() if k.startswith("value.")}
        fields: dict[str, Any] = {}
        for field, names in meta["trees"].items():
            leaves = [arrays[f"{field}.{i}"] for i in range(len(names))]
            if like is None:
                fields[field] = dict(zip(names, leaves, strict=True))
            else:
                treedef = jax.tree_util.tree_structure(like)
                if treedef.num_leaves != len(leaves):
                    raise ValueError(f"`like` has {treedef.num_leaves} leaves; the saved {field} has {len(leaves)}")
                for name, want, got in zip(names, jax.tree_util.tree_leaves(like), leaves, strict=True):
                    if np.shape(got)[-np.ndim(want) or len(np.shape(got)) :] != np.shape(want):
                        raise ValueError(
                            f"`like` does not match the saved {field}: leaf {name} has shape {np.shape(want)} in "
                            f"`like`, but the saved leaf (with its leading run axes) has shape {np.shape(got)}"
                        )
                fields[field] = jax.tree_util.tree_unflatten(treedef, leaves)
        fields.setdefault("final_params", None)
        keep = {f.name for f in dataclasses.fields(cls)}
        return cls(
            steps=arrays["steps"],
            times=arrays["times"],
            values=values,
            diverged=arrays["diverged"],
            diverged_step=arrays["diverged_step"],
            config=meta["config"],
            **{k: v for k, v in meta["scalars"].items() if k in keep},
            **fields,
        )


def run_discrete(
    problem: Problem,
    variant: Variant,
    sampler: Sampler,
    *,
    eta: float,
    steps: int,
    num_runs: int | None = None,
    key: PRNGKeyArray | Key[Array, " runs"],
    record: Record | Sequence[str] = ("loss",),
    dtype=jnp.float32,
    init_params: PyTree | None = None,
    divergence_threshold: float = 1e12,
    schedule=None,
    save_params: bool = False,
    mesh=None,
    runs_per_block: int | Literal["rule", "calibrate"] | None = None,
    svag: int = 1,
    momentum: Momentum | float | None = None,
    progress: bool = True,
) -> Runs:
    """Run ``x_{k+1} = x_k - eta * G(x_k; xi_k)`` (DESIGN §2) for ``num_runs`` independent runs.

    Run ``r`` uses ``jr.split(key, num_runs)[r]`` (or ``key[r]`` when ``key`` is a 1-D array of keys);
    step ``k`` draws its batch with the sampler from that
    run's sampler key and folds ``k`` into its variant key, so a run is reproducible from ``(key, r)``
    alone and the same whether runs are vmapped or looped. Observables are recorded at steps
    ``0, every, 2*every, ..., steps`` (``steps`` must be a multiple of ``record.every``).

    Optional: ``schedule``, a hashable callable ``step -> multiplier`` (traced integer step ``k``), makes
    step ``k`` use ``eta * schedule(k)`` (see :mod:`sde_sam.train` for constant/cosine/step schedules);
    ``save_params=True`` also keeps the parameters at every recorded step (``Runs.saved_params``, leaves
    ``(R, T, ...)``).
    ``mesh``: a 1-D :class:`jax.sharding.Mesh` (e.g. :func:`sde_sam.parallel.make_mesh`, devices of one or
    several processes); the run axis is split over its devices (padded to a multiple of their number) and
    every process gets all runs back. ``runs_per_block``: runs advanced together (vmapped) on a device,
    blocks one after another (default, ``"rule"``, ``"calibrate"``: as ``paths_per_block`` of
    :func:`sde_sam.simulate`, the calibration timing short runs of the candidate blocks; recorded in ``config``).
    Runs with the same ``runs_per_block`` are bit-identical on any mesh.
    ``svag``: ``l >= 2`` runs SVAG (:mod:`sde_sam._variants._svag`; Li, Malladi & Arora 2021) instead of the method:
    ``G_l = a G(x; xi_1) + b G(x; xi_2)`` from two independent batches, ``steps * l`` steps of ``eta / l``,
    recorded at the same times ``k * eta`` (``Runs.steps`` counts steps of ``eta``). As ``l`` grows the runs
    approach the SDE with drift ``E[G]`` and diffusion ``Cov[G]``. ``l = 1`` is the plain method.
    ``momentum``: a :class:`~sde_sam.Momentum` (or a number, heavy-ball ``beta``) on the variant's update; its
    buffer is part of each run's state. Then ``Runs.times`` are ``k eta / (1 - beta)``, the time of the
    rescaled-learning-rate SDE (``sde_model(..., momentum=...)``), so runs and paths compare at equal times.
    ``progress``: a progress bar (tqdm, on stderr) when the call runs longer than 2 seconds.
    """
    momentum = as_momentum(momentum)
    if not isinstance(problem, Problem):
        raise TypeError(f"`problem` must be a sde_sam.Problem, got {type(problem).__name__}")
    if not isinstance(variant, Variant):
        raise TypeError(f"`variant` must be a sde_sam.variants.Variant, got {type(variant).__name__}")
    record = as_record(record)
    check_positive("eta", eta)
    check_positive("steps", steps, integer=True)
    key = jnp.asarray(key)
    if key.ndim == 1 and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):  # an explicit array of run keys
        run_keys = key
        if num_runs not in (None, key.shape[0]):
            raise ValueError(f"`num_runs`={num_runs} disagrees with the {key.shape[0]} run keys passed as `key`")
        num_runs = int(key.shape[0])
    elif key.ndim == 0 and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        num_runs = 1 if num_runs is None else num_runs
        check_positive("num_runs", num_runs, integer=True)
        run_keys = jr.split(key, num_runs)
    else:
        raise TypeError("`key` must be a typed PRNG key (jax.random.key(seed)) or a 1-D array of such keys")
    check_positive("divergence_threshold", divergence_threshold)
    if mesh is not None:
        check_mesh(mesh)
    if isinstance(runs_per_block, str) and runs_per_block not in ("rule", "calibrate"):
        raise ValueError(
            f"`runs_per_block` must be a positive integer, None, 'rule' or 'calibrate', got {runs_per_block!r}"
        )
    if runs_per_block is not None and not isinstance(runs_per_block, str):
        check_positive("runs_per_block", runs_per_block, integer=True)
    check_sampler(sampler, problem)
    variant.check(sampler.batch_size, problem.num_examples, problem.init_params)
    svag = check_svag(svag)
    if steps % record.every:
        raise ValueError(f"`steps`={steps} must be a multiple of record.every={record.every}")
    dtype = resolve_dtype(dtype)
    if init_params is not None:
        problem.check_params(init_params, "init_params")
        problem = dataclasses.replace(problem, init_params=init_params)  # validates (finite, matches loss_fn)
    problem = problem.with_dtype(dtype)
    record = record.bind(problem, variant, sampler)  # observables that take the variant or sampler get them here
    record.check(problem)

    num_segments = steps // record.every
    start = time.perf_counter()
    if schedule is not None and not callable(schedule):
        raise TypeError(f"`schedule` must be None or a callable step -> learning-rate multiplier, got {schedule!r}")
    if schedule is not None:
        check_schedule(schedule, steps)
    run_args = (
        problem,
        traced_hyperparameters(variant, dtype),
        sampler,
        record,
        jnp.asarray(eta, dtype),
        num_segments,
        run_keys,
        float(divergence_threshold),
        schedule,
        bool(save_params),
        svag,
        momentum,
    )
    devices = 1 if mesh is None else int(mesh.size)
    per_device = math.ceil(num_runs / devices)
    if runs_per_block is None or isinstance(runs_per_block, str):  # sde_sam._blocks
        block = _default_runs_block(run_args, variant, per_device, steps * svag, runs_per_block, progress)
        runs_per_block = None if block == per_device else block
    blocks = devices * math.ceil(per_device / (per_device if runs_per_block is None else runs_per_block))
    steps_total = progress_total(num_segments, record.every * svag, blocks)
    release_programs_near_map_limit()  # before compiling: a process of thousands of programs crashes XLA
    with progress_bar(steps_total, f"run {variant.name}", enabled=progress) as bar:
        run_args = (*run_args, bar)
        if mesh is None and runs_per_block is None:
            out = _run(*run_args)
        else:  # run keys are argument 6 of _run
            out = run_blocked(_run, run_args, 6, mesh=mesh, block=runs_per_block)
            out = jax.tree_util.tree_map(jnp.asarray, out)
        out = jax.block_until_ready(out)
    wall = time.perf_counter() - start
    values, div, div_step, final, saved = out
    record.check_values(values)
    div_step = np.asarray(div_step)
    if svag > 1:  # report divergence in steps of the method (step ceil(j / l) of eta)
        div_step = np.where(div_step >= 0, -(-div_step // svag), -1)
    steps_arr = np.arange(num_segments + 1) * record.every
    return Runs(
        steps=steps_arr,
        times=steps_arr * float(eta) * (1.0 if momentum is None else momentum.time_scale),
        values={k: np.asarray(v) for k, v in values.items()},
        diverged=np.asarray(div),
        diverged_step=np.asarray(div_step),
        final_params=final,
        config={
            "problem": problem.name,
            "variant": variant.config(),
            "sampler": type(sampler).__name__,
            "batch_size": sampler.batch_size,
            "eta": float(eta),
            "steps": int(steps),
            "num_runs": int(num_runs),
            "every": record.every,
            "dtype": str(dtype),
            "divergence_threshold": float(divergence_threshold),
            "key": key_config(key),
            "runs_per_block": per_device if runs_per_block is None else int(runs_per_block),
        }
        | ({} if svag == 1 else {"svag": svag})
        | ({} if schedule is None else {"schedule": repr(schedule)})
        | ({} if momentum is None else {"momentum": momentum.config()})
        | {"devices": 1 if mesh is None else int(mesh.size)},
        wall_time_s=wall,
        saved_params=saved if save_params else None,
    )


def _default_runs_block(
    run_args: tuple, variant: Variant, per_device: int, steps: int, choice: str | None, progress: bool
) -> int:
    """The block of runs (as :func:`sde_sam._sde._simulate.simulation_block`, padded blocks): every run at once for
    small calls, the flop rule for calls of less than ``CALIBRATE_FLOPS`` of work, else the fastest candidate of
    short timed runs of :func:`_run` (``steps``: all steps of a run, SVAG's included). ``variant``: the variant
    with its hyperparameters as numbers (the key of the kept flop counts and blocks)."""
    problem, traced, sampler = run_args[:3]
    eta, run_keys, threshold, schedule, svag, momentum = (run_args[i] for i in (4, 6, 7, 8, 10, 11))

    def time_block(block: int, flops: float) -> float:
        k = timing_steps(block, flops * svag)
        record = observables("loss", every=k)
        keys = run_keys[:block]
        run = lambda: _run(problem, traced, sampler, record, eta, 1, keys, threshold, schedule, False, svag, momentum)  # noqa: E731
        return seconds_per_item_step(run, block, k)

    return chosen_block(
        per_device,
        problem.num_examples * problem.dim,
        per_device * steps,
        choice,
        lambda: run_step_flops(problem, variant, sampler),
        time_block,
        lambda: repr((step_program(problem, variant, sampler.batch_size), sampler, svag, momentum, schedule)),
        divides=False,
        progress=progress,
        desc="calibrate runs_per_block",
    )


def run_step_flops(problem: Problem, variant: Variant, sampler: Sampler) -> float:
    """XLA's flop count of one discrete step ``G(x; xi)`` of one run on a batch of the sampler's size
    (:func:`~sde_sam._cost.step_cost`, kept per program)."""
    count = lambda: step_cost(problem, variant, sampler.batch_size).flops  # noqa: E731
    structure = jax.tree_util.tree_structure(variant)  # the program: hyperparameters are traced, not in the key
    return cached_flops(("run_step", structure, sampler), (problem,), count)


def step_keys_of(key: PRNGKeyArray, steps: Int[Array, " steps"]) -> Key[Array, " steps"]:
    """The variant's keys ``jr.fold_in(key, k)`` of the steps ``k`` in ``steps``, derived in one vectorised call."""
    return jax.vmap(lambda k: jr.fold_in(key, k))(steps)


def traced_hyperparameters(variant: Variant, dtype) -> Variant:
    """``variant`` with its hyperparameters (``rho``, the rule's and the preconditioner's) as arrays of ``dtype``:
    traced by a compiled run, so that a sweep over them reuses one program (the values, and so the results, are
    those of the numbers)."""
    return jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype), variant)


@functools.partial(jax.jit, static_argnums=(2, 3, 5, 7, 8, 9, 10, 11))
def _run(
    problem,
    variant,
    sampler,
    record,
    eta,
    num_segments,
    run_keys,
    threshold,
    schedule=None,
    save_params=False,
    svag=1,
    momentum=None,
    bar=None,
):
    n = problem.num_examples
    inner = record.every * svag  # steps per recording interval
    step_eta = eta if svag == 1 else eta / svag

    def one_run(run_key):
        sample_key, variant_key = jr.split(run_key)
        params0 = problem.init_params
        svag_keys = jr.split(sample_key)  # SVAG's two independent batch streams (unused when svag == 1)

        def update(params, vstate, k, vkeys):
            if svag == 1:
                batch = problem.take(sampler.indices(sample_key, k, n))
                return variant.gradient(problem, params, vstate, batch, vkeys)
            batches = tuple(problem.take(sampler.indices(svag_keys[i], k, n)) for i in range(2))
            return svag_gradient(problem, variant, svag, params, vstate, batches, vkeys)

        def step(carry, vkeys):
            params, is_div, div_step, k, (vstate, buf) = carry
            G, new_vstate, _ = update(params, vstate, k, vkeys)
            k_method = k if svag == 1 else k // svag  # the schedule runs on the method's steps
            eta_k = step_eta if schedule is None else step_eta * jnp.asarray(schedule(k_method), eta.dtype)
            new_buf = buf
            if momentum is not None:  # v <- G + beta v; heavy ball steps along v, Nesterov along G + beta v
                G, new_buf = momentum.transform().update(G, buf)
            new_params = jax.tree_util.tree_map(lambda p, g: p - eta_k * g, params, G)
            now_div = diverged(new_params, threshold) & ~is_div
            keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(is_div | now_div, b, a), new, old)  # noqa: E731
            return (
                keep(new_params, params),
                is_div | now_div,
                jnp.where(now_div, k + 1, div_step),
                k + 1,
                (keep(new_vstate, vstate), keep(new_buf, buf)),
            ), None

        def advance(carry):
            # the variant's keys of the segment's steps, drawn together before its scan (same values as one
            # fold_in per step; a per-step key derivation inside the step costs RW-SAM ~0.1x a SAM step)
            steps = carry[3] + jnp.arange(inner)
            if svag == 1:
                vkeys = step_keys_of(variant_key, steps)
            else:
                vkeys = (step_keys_of(variant_key, 2 * steps), step_keys_of(variant_key, 2 * steps + 1))
            return jax.lax.scan(step, carry, vkeys)[0]

        buf0 = () if momentum is None else momentum.transform().init(params0)
        return recorded_scan(
            advance,
            record,
            problem,
            params0,
            (variant.init(params0), buf0),
            num_segments,
            save_params,
            bar,
            stride(num_segments, inner),
        )

    return jax.vmap(one_run)(run_keys)
