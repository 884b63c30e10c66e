"""Real training of small networks, recorded (DESIGN §6.3): many seeds at once, observables along the way.

A :class:`TrainConfig` names everything a recording depends on (problem, variant, sampler, learning rate and
schedule, steps, seeds, observables, estimator sizes); :func:`record` builds the problem and variant from it,
trains every seed at once with :func:`sde_sam.run_discrete` (vmap over seeds, one jitted scan) and returns a
:class:`TrainRecord` that carries the config, the seeds, package versions, device and wall time, and saves
itself atomically (:func:`sde_sam.save_result`).

Observables (names in :data:`OBSERVABLES`), all at the full training set unless said otherwise:
``loss``, ``accuracy``, ``test_loss``, ``test_accuracy``, ``grad_norm_sq`` (``||g||^2``), ``trace_sigma``
(exact ``tr Sigma`` from per-example gradients, ``sde_sam.noise.trace_sigma``; for BatchNorm networks the
mini-batch estimator ``E||g_gamma - g||^2 / c(B)``), ``lambda_max`` (top Hessian eigenvalue, Lanczos,
``sde_sam.curvature.top_eigenvalues``), ``trace_hessian`` (Hutchinson, ``sde_sam.curvature.trace_hessian``),
``batch_grad_norm`` (``E||g_m||`` over micro-batches of the variant's size ``m``: ``micro_batch_size``, else
``B``; ``n`` for n-SAM; ``sde_sam.noise.expected_batch_grad_norm``), ``distance`` (``||x - x_0||``) and
``effective_sample_size`` (Kish's ``1 / sum_i p_i^2`` of the weights the variant's rule puts on a batch, mean
over ``norm_batches`` batches: RW-SAM's Gibbs weights; ``B`` for every other rule;
``sde_sam.noise.expected_effective_sample_size``).
Stochastic estimators use a fixed key at every recorded point (common random numbers across steps, seeds and
variants), so differences along a trajectory are not blurred by fresh estimator noise.

Every seed starts from the same initial point (the problem's, or ``init_params``): seeds differ in the batch
order and in the variant's own randomness, which is what the SDE models (DESIGN §6.3).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import PyTree

from .._checks import check_integer
from .._estimators._observables import (
    REGISTRY,
    AbstractObservable,
    BatchGradNorm,
    EffectiveSampleSize,
    LambdaMax,
    TraceHessian,
    TraceSigma,
    TraceSigmaMinibatch,
    check_values,
    observables,
)
from .._io import provenance
from .._problems import _networks
from .._problems._problem import Problem
from .._problems._sampler import WithoutReplacement, WithReplacement
from .._variants._variant import Variant
from ._config import (
    EstimatorSizes,
    TrainConfig,
    build_momentum,
    build_problem,
    build_sampler,
    build_schedule,
    build_variant,
    micro_batch_size,
)
from ._record import TrainRecord
from ._runner import Runs, run_discrete

# -- observables ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Estimators(EstimatorSizes):
    """The recorded observables as pure functions ``fn(problem, params) -> scalar`` (DESIGN §4 estimators).

    A hashable value (estimator sizes, ``m``, the sampler, whether the problem uses BatchNorm), so jitted
    evaluations are compiled once and reused across variants with the same settings. ``m`` only matters for
    ``batch_grad_norm``. Build it with :meth:`of`.
    """

    batch_size: int = 64
    with_replacement: bool = False
    batch_norm: bool = False
    m: int | None = None
    rule: Any = None

    @classmethod
    def of(cls, config: TrainConfig, variant: Variant, problem: Problem) -> Estimators:
        return cls(
            **config.estimator_sizes(),
            batch_size=config.batch_size,
            with_replacement=config.sampler == "with_replacement",
            batch_norm=_networks.is_batch_norm_problem(problem),
            m=micro_batch_size(variant, config.batch_size, problem.num_examples),
            rule=variant.rule,
        )

    @property
    def key(self):
        return jr.key(self.estimator_seed)

    @property
    def sampler(self):
        return WithReplacement(self.batch_size) if self.with_replacement else WithoutReplacement(self.batch_size)

    def function(self, name: str) -> AbstractObservable:
        """The observable ``name`` of the registry (:data:`sde_sam._estimators._observables.REGISTRY`) with these
        settings: the estimator sizes, the fixed key, ``m``, the rule and the sampler."""
        seed = self.estimator_seed
        if name == "trace_sigma":
            if self.batch_norm:  # no per-example loss: covariance of batch gradients / c(B) (DESIGN §4)
                return TraceSigmaMinibatch(self.minibatch_batches, seed, self.sampler)
            return TraceSigma(self.chunk_size)
        settings = {
            "lambda_max": lambda: LambdaMax(self.lanczos_matvecs, seed),
            "trace_hessian": lambda: TraceHessian(self.hutchinson_probes, seed),
            "batch_grad_norm": lambda: BatchGradNorm(self.m or self.batch_size, self.norm_batches, seed),
            "effective_sample_size": lambda: EffectiveSampleSize(self.norm_batches, seed, self.rule, self.sampler),
        }
        return settings[name]() if name in settings else REGISTRY[name]

    def for_name(self, name: str) -> Estimators:
        """The settings ``name`` depends on (``m`` dropped unless it is ``batch_grad_norm``, the rule unless it is
        ``effective_sample_size``), for compile reuse."""
        keep = {
            "m": self.m if name == "batch_grad_norm" else None,
            "rule": self.rule if name == "effective_sample_size" else None,
        }
        return dataclasses.replace(self, **keep)

    def record(self, names: Sequence[str], every: int):
        """An inline :func:`sde_sam.observables` record of ``names`` (evaluated inside the training scan)."""
        return observables(every=every, **{name: self.function(name) for name in names})


@functools.partial(jax.jit, static_argnums=(0, 1, 4))
def _evaluate_points(est: Estimators, name: str, problem: Problem, points: PyTree, batch: int):
    """``fn(problem, x)`` at every point of ``points`` (leading axis), ``batch`` points at a time (lax.map)."""
    fn = est.function(name)
    return jax.lax.map(lambda x: jnp.asarray(fn(problem, x)), points, batch_size=batch)


def evaluate(
    est: Estimators, names: Sequence[str], problem: Problem, params: PyTree, *, batch: int = 4
) -> dict[str, np.ndarray]:
    """Observables at stacked parameters ``params`` (leaves ``(*lead, ...)`` with any leading shape matching
    ``problem.init_params`` after it): ``{name: array of shape lead}``. Compiled once per (settings, name,
    problem, shape) and reused across variants."""
    ref = jax.tree_util.tree_leaves(problem.init_params)[0]
    leaf = jax.tree_util.tree_leaves(params)[0]
    lead = leaf.shape[: leaf.ndim - ref.ndim]
    flat = jax.tree_util.tree_map(lambda a: a.reshape(-1, *a.shape[len(lead) :]), params)
    out = {}
    for name in names:
        vals = _evaluate_points(est.for_name(name), name, problem, flat, batch)
        out[name] = np.asarray(vals).reshape(lead)
    check_values({n: REGISTRY[n] for n in names if n in REGISTRY}, out)
    return out


def run_keys(seeds: Sequence[int]):
    """One key per seed, ``jr.key(seed)``: a seed's run is the same alone or in any ensemble."""
    return jnp.stack([jr.key(int(s)) for s in seeds])


def record(
    config: TrainConfig,
    *,
    problem: Problem | None = None,
    init_params: PyTree | None = None,
    save_params: bool = False,
    keep_params: bool = False,
    inline: bool = False,
    timing_repeats: int = 0,
    mesh=None,
    progress: bool = True,
) -> TrainRecord:
    """Train every seed of ``config`` at once and record its observables (DESIGN §6.3).

    The seeds run vmapped in one jitted scan (:func:`sde_sam.run_discrete`, seed ``s`` with key ``jr.key(s)``).
    By default the parameters at the recorded steps are kept and the observables are evaluated on them
    afterwards (:func:`evaluate`), so the estimators compile once per problem and are shared by all variants;
    ``inline=True`` evaluates them inside the training scan instead (custom observables; same numbers).
    Runs that diverge are frozen and their later records are NaN (counted in ``meta["num_diverged"]``).

    ``problem``: use this problem instead of building it from the config (pass one object to every call of
    an experiment so compilations are reused); ``init_params``: start every seed here (default the problem's
    initial point); ``save_params``: keep the parameters at every recorded step (``saved_params``, leaves
    ``(R, T, ...)``); ``keep_params``: keep the initial and final parameters; ``timing_repeats``: run the
    identical (already compiled) training again that many times and store the median wall time per step in
    ``meta["time_per_step_s"]`` (all seeds together, observables at the recorded steps included); ``mesh``: a 1-D
    device mesh (:func:`sde_sam.parallel.make_mesh`) to shard the seeds over (:func:`sde_sam.run_discrete`);
    ``progress``: the training's progress bar (as in :func:`sde_sam.run_discrete`).
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"`config` must be a TrainConfig, got {type(config).__name__}")
    check_integer("timing_repeats", timing_repeats, low=0)
    problem = build_problem(config) if problem is None else problem
    variant = build_variant(config)
    sampler = build_sampler(config)
    est = Estimators.of(config, variant, problem)
    start_params = problem.init_params if init_params is None else init_params
    if init_params is not None:
        problem.check_params(init_params, "init_params")
        problem = dataclasses.replace(problem, init_params=init_params)
    names = config.observables
    rec = est.record(names, config.every) if inline else observables("loss", every=config.every)
    kw = {
        "eta": config.eta,
        "steps": config.steps,
        "key": run_keys(config.seeds),
        "record": rec,
        "schedule": build_schedule(config),
        "save_params": not inline or save_params,
        "mesh": mesh,
        "momentum": build_momentum(config),
        "progress": progress,
    }
    wall0 = time.perf_counter()
    runs: Runs = run_discrete(problem, variant, sampler, **kw)
    train_wall = time.perf_counter() - wall0
    per_step = None
    if timing_repeats:
        reps = [run_discrete(problem, variant, sampler, **kw).wall_time_s for _ in range(timing_repeats)]
        per_step = float(np.median(reps)) / config.steps
    values = runs.values
    if not inline:
        values = evaluate(est, names, problem, runs.saved_params)
        after = runs.diverged[:, None] & (runs.steps[None, :] >= runs.diverged_step[:, None])
        values = {k: np.where(after, np.nan, v) for k, v in values.items()}
    wall = time.perf_counter() - wall0
    meta = {
        "kind": "train_record",
        "config": config.to_dict(),
        "seeds": list(config.seeds),
        "problem": problem.name,
        "dim": problem.dim,
        "num_examples": problem.num_examples,
        "variant": runs.config["variant"],
        "micro_batch_size_of_norm": est.m,
        "sampling_factor_cB": sampler.factor(config.batch_size, problem.num_examples),
        "devices": runs.config["devices"],
        "num_diverged": runs.num_diverged,
        "diverged_step": runs.diverged_step.tolist(),
        "observed": "inline" if inline else "saved_params",
        "wall_time_s": wall,
        "train_wall_time_s": train_wall,
        "time_per_step_s": per_step,
        "timing_repeats": int(timing_repeats),
        "provenance": provenance(),
    }
    return TrainRecord(
        config,
        runs.steps,
        values,
        runs.diverged,
        meta,
        init_params=start_params if keep_params or save_params else None,
        final_params=runs.final_params if keep_params or save_params else None,
        saved_params=runs.saved_params if save_params else None,
    )


def step_time(
    config: TrainConfig, *, problem: Problem | None = None, repeats: int = 5, steps: int = 20
) -> dict[str, float]:
    """Wall time per training step of ``config``'s variant, all its seeds at once (vmapped), after compilation:
    :func:`sde_sam.run_discrete` over ``steps`` steps recording only the loss at both ends, timed ``repeats``
    times (the first, compiling call is not counted); median, min and max per step (DESIGN §8, F8)."""
    problem = build_problem(config) if problem is None else problem
    variant = build_variant(config)
    sampler = build_sampler(config)
    rec = observables("loss", every=steps)
    kw = {
        "eta": config.eta,
        "steps": steps,
        "key": run_keys(config.seeds),
        "record": rec,
        "momentum": build_momentum(config),
    }
    run_discrete(problem, variant, sampler, **kw)  # compile
    times = np.asarray([run_discrete(problem, variant, sampler, **kw).wall_time_s / steps for _ in range(repeats)])
    return {
        "median_s": float(np.median(times)),
        "min_s": float(times.min()),
        "max_s": float(times.max()),
        "repeats": int(repeats),
        "steps_per_repeat": int(steps),
        "num_seeds": len(config.seeds),
    }
