"""Which SDE describes a discrete run, and how well: the fidelity ladder and its error budget (DESIGN §3, §6).

For each variant and problem, the discrete runs are compared with every model of the ladder

* drift: ``general`` (first order in ``rho``, DESIGN §3.1) or ``expected`` (the mean step ``E_xi[G]``, exact in
  ``rho``);
* diffusion: ``leading`` (``Cov[G_0]`` of the rho-free update), ``first_order`` (where defined: SGD, n-USAM,
  the unnormalized batch rule) or ``empirical`` (``Cov_xi[G]`` of the perturbed update);
* order: ``1`` or ``2`` (drift ``b + (eta/2)(Db) b``; not defined for RW-SAM, whose weights carry stop_gradient);

each simulated at ``dt = eta`` and refined (``eta/2``, ``eta/4``, ...) until the change of the gap is within
Monte Carlo error (at most ``max_refine`` halvings), so that the Euler–Maruyama error is told apart from the
model's; plus SVAG (Li, Malladi & Arora 2021) at ``l`` in ``svag`` (``l = 1`` is the discrete method): a
discrete process with the SDE's moments whose distance from the discrete run measures the finite-learning-rate
effect (the part of the gap no SDE can close).

With ``momentum`` in a part's config (``{"beta": 0.9, "nesterov": false}``; preset ``momentum``) the discrete runs
use heavy-ball (or Nesterov) momentum and every rung is the rescaled-learning-rate model of its variant (step
``eta / (1 - beta)``, order 1), read at the runs' time and at the warm-up-corrected time; SVAG is skipped.

Every gap is ``mean_model - mean_discrete`` of an observable, with standard error
``sqrt(se_model^2 + se_discrete^2)`` over independent paths and runs, at the final recorded time and as the
time average over the recorded grid (per-path averages, so its standard error is exact). Diverged paths
and runs are counted and left out.

Problems: (a) the sharp/flat escape problem (observables: fraction outside the sharp basin, measured against
the problem's true barrier, :func:`sde_sam.problems.sharp_flat_barrier`, and the loss); (b) digits-MLP
training (every observable of :data:`sde_sam.train.OBSERVABLES` asked for, evaluated on the stored
parameters of both sides with the same estimators).

``python -m analysis.fidelity --preset quick --out DIR`` writes ``DIR/fidelity.json`` (config, seed, versions).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import jax
import jax.random as jr
import numpy as np

import sde_sam as ss
from analysis.presets import preset
from sde_sam import train
from sde_sam._io import load_result, provenance, quarantine, result_paths, save_result, to_jsonable

#: |z| below which a model "tracks" the discrete runs on an observable (C10).
Z_TRACK = 3.0


@dataclasses.dataclass(frozen=True)
class Rung:
    """One SDE model of the ladder."""

    drift: str
    diffusion: str
    order: int

    @property
    def label(self) -> str:
        return f"{self.drift}/{self.diffusion}/o{self.order}"


def ladder(variant, drifts=("general", "expected"), diffusions=("leading", "first_order", "empirical"),
           orders=(1, 2)) -> list[Rung]:
    """The rungs defined for ``variant`` (each drift's and diffusion's ``supports``; order 2 where the update is
    differentiable). For a variant that does not perturb (SGD) every drift is ``g`` and the leading diffusion is
    exact, so one drift and one diffusion stand for all."""
    if not variant.perturbs:
        leading = tuple(d for d in diffusions if isinstance(ss.sde.as_diffusion(d), ss.sde.LeadingDiffusion))
        drifts, diffusions = drifts[:1], leading or diffusions[:1]
    out = []
    for order in orders:
        if order == 2 and not variant.differentiable_update:
            continue
        for drift in drifts:
            if not ss.sde.as_drift(drift).supports(variant):
                continue
            for diffusion in diffusions:
                if ss.sde.as_diffusion(diffusion).supports(variant):
                    out.append(Rung(drift, diffusion, order))
    return out


# -- gap statistics -------------------------------------------------------------------------------------------


def _kept(values: np.ndarray) -> np.ndarray:
    """Rows (runs or paths) without NaN: diverged ones are left out."""
    return values[~np.any(np.isnan(values), axis=1)]


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    mean, stderr = ss.mean_stderr(values)  # one run: no standard error (NaN)
    return float(mean), float(stderr)


def _z(g, se, ref):
    """``g / se``; a gap whose standard error is at the rounding level of ``ref`` (a deterministic process) has
    ``z = 0`` when the gap is too, else ``+-inf``. Scalars or arrays."""
    g, se = np.asarray(g, np.float64), np.asarray(se, np.float64)
    tiny = 1e-12 * np.maximum(1.0, np.abs(ref))
    ok = se > tiny
    return np.where(ok, g / np.where(ok, se, 1.0), np.where(np.abs(g) <= tiny, 0.0, np.copysign(np.inf, g)))


def gap(model_vals: np.ndarray, disc_vals: np.ndarray) -> dict:
    """Gap statistics of one observable, ``(P, T)`` model values against ``(R, T)`` discrete ones: final-time and
    time-averaged gap, their standard errors and z-scores, and the largest |z| over recorded times."""
    a, b = _kept(model_vals), _kept(disc_vals)
    out = {}
    for key, fa, fb in (("final", a[:, -1], b[:, -1]), ("time_avg", a.mean(1), b.mean(1))):
        ma, sa = _mean_se(fa)
        mb, sb = _mean_se(fb)
        g, se = ma - mb, math.hypot(sa, sb)
        out[key] = {"model": ma, "discrete": mb, "gap": g, "stderr": se, "z": float(_z(g, se, max(abs(ma), abs(mb))))}
    if a.shape[0] > 1 and b.shape[0] > 1:
        se_t = np.sqrt(a.var(0, ddof=1) / a.shape[0] + b.var(0, ddof=1) / b.shape[0])
        z_t = _z(a.mean(0) - b.mean(0), se_t, np.maximum(np.abs(a.mean(0)), np.abs(b.mean(0))))
        out["max_abs_z"] = float(np.max(np.abs(z_t)))
        out["mean_model"], out["mean_discrete"] = a.mean(0).tolist(), b.mean(0).tolist()
    else:
        out["max_abs_z"] = math.nan
    out["kept"] = {"model": int(a.shape[0]), "discrete": int(b.shape[0])}
    return out


# -- one variant on one problem -------------------------------------------------------------------------------


def _variant(spec):
    label, name, kw = spec
    return label, ss.variants.get(name, **kw)


def _at(paths, idx: np.ndarray):
    """``paths`` at the recorded indices ``idx`` only (values and saved parameters)."""
    return dataclasses.replace(paths, steps=paths.steps[idx], times=paths.times[idx],
                               values={k: v[:, idx] for k, v in paths.values.items()},
                               paths=jax.tree_util.tree_map(lambda a: a[:, idx], paths.paths))


def study_variant(problem, variant, sampler, *, eta, steps, every, observe, num_runs, num_paths, key, rungs,
                  svag=(1,), max_refine=2, key_observable, stat="time_avg", num_samples=16, momentum=None,
                  log=print) -> dict:
    """The error budget of one variant: the discrete runs, SVAG at each ``l``, and each rung at each ``dt``.

    ``observe(kind, out) -> {name: (N, T) array}`` turns a :class:`~sde_sam.Runs` / :class:`~sde_sam.Paths`
    into observable arrays (diverged rows NaN); ``key_observable``/``stat`` decide when a refinement has
    converged (the change of that gap within 2 of its combined standard errors).

    ``momentum`` (a :class:`~sde_sam.Momentum`): the discrete runs use it and every rung is its
    rescaled-learning-rate model (step ``eta / (1 - beta)``, first order only), read at the runs' time
    ``k eta / (1 - beta)`` (``gaps``) and at the warm-up-corrected time ``eta / (1 - beta) * elapsed_steps(k)``
    (``gaps_warmup``, :meth:`~sde_sam.Momentum.elapsed_steps`). SVAG of a momentum method is not defined here:
    ``l > 1`` is skipped and said so."""
    # every model first: sde_model validates each rung (e.g. order 2 with momentum) before any run is made
    models = {rung: ss.sde_model(problem, variant, sampler, eta=eta, diffusion=rung.diffusion, order=rung.order,
                                 drift=rung.drift, num_samples=num_samples, momentum=momentum) for rung in rungs}
    k_disc, k_svag, k_sde = jr.split(key, 3)
    t0 = time.perf_counter()
    runs = ss.run_discrete(problem, variant, sampler, eta=eta, steps=steps, num_runs=num_runs, key=k_disc,
                           record=ss.observables("loss", every=every), save_params=True, momentum=momentum)
    disc = observe("runs", runs)
    out = {"discrete": {"diverged": runs.num_diverged, "wall_s": time.perf_counter() - t0,
                        "final": {n: _mean_se(_kept(v)[:, -1]) for n, v in disc.items()}},
           "svag": {}, "models": {}}
    # with momentum, record every SDE step of eta / (1 - beta) and read the plain and the warm-up-corrected times
    sde_every = every if momentum is None else 1
    plain = np.asarray(runs.steps)
    warm = None if momentum is None else np.rint(momentum.elapsed_steps(plain)).astype(int)
    if momentum is not None:
        out["momentum"] = momentum.config() | {"warmup_steps": warm.tolist()}
    for l in svag:  # noqa: E741
        if l == 1:
            continue
        if momentum is not None:
            out["svag_skipped"] = "SVAG of a momentum method is not defined here"
            log(f"    SVAG l={l}: skipped (momentum)")
            continue
        t0 = time.perf_counter()
        sv = ss.run_discrete(problem, variant, sampler, eta=eta, steps=steps, num_runs=num_runs,
                             key=jr.fold_in(k_svag, l), record=ss.observables("loss", every=every), save_params=True,
                             svag=l)
        vals = observe("runs", sv)
        out["svag"][str(l)] = {"gaps": {n: gap(vals[n], disc[n]) for n in disc}, "diverged": sv.num_diverged,
                               "wall_s": time.perf_counter() - t0}
        g = out["svag"][str(l)]["gaps"][key_observable][stat]
        log(f"    SVAG l={l:<2d} {key_observable} {stat} gap {g['gap']:+.4f} ± {g['stderr']:.4f} (z {g['z']:+.1f})")
    for rung, model in models.items():
        h = model.eta  # the SDE time of one step (eta / (1 - beta) with momentum)
        levels, prev = [], None
        for r in range(max_refine + 1):
            refine = 2**r
            t0 = time.perf_counter()
            paths = ss.simulate(model, t1=steps * h, dt=h / refine, num_paths=num_paths, key=k_sde,
                                record=ss.observables("loss", every=sde_every * refine), save_paths=True)
            if momentum is None:
                vals = observe("paths", paths)
            else:
                vals = observe("paths", _at(paths, plain))
                vals_w = observe("paths", _at(paths, warm))
            gaps = {n: gap(vals[n], disc[n]) for n in disc}
            level = {"refine": refine, "dt": h / refine, "gaps": gaps, "diverged": paths.num_diverged,
                     "wall_s": time.perf_counter() - t0}
            if momentum is not None:
                level["gaps_warmup"] = {n: gap(vals_w[n], disc[n]) for n in disc}
            levels.append(level)
            g = gaps[key_observable][stat]
            log(f"    {rung.label:30s} dt=h/{refine:<2d} {key_observable} {stat} gap {g['gap']:+.4f} ± "
                f"{g['stderr']:.4f} (z {g['z']:+.1f}) [{level['wall_s']:.1f} s]")
            if momentum is not None:
                gw = level["gaps_warmup"][key_observable][stat]
                log(f"    {'  at the warm-up-corrected time':37s} {key_observable} {stat} gap {gw['gap']:+.4f} ± "
                    f"{gw['stderr']:.4f} (z {gw['z']:+.1f})")
            if prev is not None:
                # converged when the change is within 2 combined standard errors (the levels share path keys, so
                # the change's own standard error is smaller: this stops early rather than late)
                if abs(g["gap"] - prev["gap"]) <= 2 * math.hypot(g["stderr"], prev["stderr"]):
                    break
            prev = g
        out["models"][rung.label] = {"rung": dataclasses.asdict(rung), "levels": levels}
    out["budget"] = budget_rows(out, key_observable, stat)  # the rows F9 draws: in the result, saved with it
    return out


# each part's key observable (None: the training config's) and statistic, as its error budget reads them
_BUDGETS = (("escape", "outside", "time_avg"), ("training", None, "final"))


def budget_rows(res: dict, key_observable: str, stat: str = "time_avg") -> list[dict]:
    """Rows of the error-budget table of one variant: each model at ``dt = eta`` and at its finest ``dt``, SVAG,
    the gap of ``key_observable`` with its standard error and |z|, the share of the ``dt = eta`` gap that the
    refinement removes, and on how many observables the model tracks (|z| < 3 at every recorded time)."""
    rows = []
    unit = "eta" if "momentum" not in res else "h"  # with momentum the SDE step is h = eta / (1 - beta)
    for l, sv in sorted(res["svag"].items(), key=lambda kv: int(kv[0])):  # noqa: E741
        g = sv["gaps"][key_observable][stat]
        rows.append({"model": f"SVAG l={l}", "dt": "eta/" + l, "gap": g["gap"], "stderr": g["stderr"], "z": float(g["z"]),
                     "tracks": _tracks(sv["gaps"]), "refinement_removes": None, "diverged": sv["diverged"]})
    for label, m in res["models"].items():
        first, last = m["levels"][0], m["levels"][-1]
        g0, g1 = first["gaps"][key_observable][stat], last["gaps"][key_observable][stat]
        removed = _removed(g0, g1)
        rows.append({"model": label, "dt": f"{unit}/{last['refine']}", "gap": g1["gap"], "stderr": g1["stderr"],
                     "z": float(g1["z"]), "gap_at_eta": g0["gap"], "stderr_at_eta": g0["stderr"],
                     "tracks": _tracks(last["gaps"]), "refinement_removes": removed, "diverged": last["diverged"]})
        if "gaps_warmup" in last:  # momentum: the same paths read at the warm-up-corrected time
            w0, w1 = first["gaps_warmup"][key_observable][stat], last["gaps_warmup"][key_observable][stat]
            removed = _removed(w0, w1)
            rows.append({"model": f"{label}, warm-up time", "dt": f"{unit}/{last['refine']}", "gap": w1["gap"],
                         "stderr": w1["stderr"], "z": float(w1["z"]), "gap_at_eta": w0["gap"],
                         "stderr_at_eta": w0["stderr"], "tracks": _tracks(last["gaps_warmup"]),
                         "refinement_removes": removed, "diverged": last["diverged"]})
    return rows


def _removed(coarse: dict, fine: dict) -> float:
    """The share of the ``dt = eta`` gap that refining removes (negative when it moves the model away)."""
    return (abs(coarse["gap"]) - abs(fine["gap"])) / abs(coarse["gap"]) if coarse["gap"] != 0 else 0.0


def _tracks(gaps: dict) -> str:
    ok = sum(1 for g in gaps.values() if float(g["max_abs_z"]) < Z_TRACK)  # float(): "inf" as stored in JSON
    return f"{ok}/{len(gaps)}"


def best_model(res: dict, key_observable: str, stat: str = "time_avg") -> str:
    """The model (finest ``dt``) with the smallest |gap| of ``key_observable``."""
    best, val = None, math.inf
    for label, m in res["models"].items():
        g = abs(float(m["levels"][-1]["gaps"][key_observable][stat]["gap"]))
        if g < val:
            best, val = label, g
    return best


# -- (a) escape ------------------------------------------------------------------------------------------------


def escape(cfg: dict, log=print, done=None, on_variant=None) -> dict:
    """The ladder on the sharp/flat escape problem: fraction outside the sharp basin (true barrier) and loss.
    ``done``: variants finished earlier (label -> result), reused as they are; ``on_variant(result)`` is called
    after each new one (the CLI saves there, so an interrupted run resumes)."""
    problem = ss.problems.sharp_flat_basins(dim=1, n=cfg["n"], sharp_curvature=cfg["sharp_curvature"],
                                            noise_scale=cfg["noise_scale"], seed=cfg["seed"], start="sharp")
    barrier = ss.problems.sharp_flat_barrier(problem)
    sampler = ss.UniformSubset(cfg["batch_size"])

    def observe(kind, out):
        x = np.asarray(out.saved_params if kind == "runs" else out.paths)[..., 0]  # (N, T) first coordinate
        loss = np.asarray(out.values["loss"], np.float64)  # recorded along the run, NaN once diverged
        return {"outside": np.where(np.isnan(loss), np.nan, (x > barrier).astype(np.float64)), "loss": loss}

    result = {"problem": problem.name, "barrier": barrier, "sampler": type(sampler).__name__, "variants": {}}
    for i, spec in enumerate(cfg["variants"]):
        label, variant = _variant(spec)
        if _reuse(result, done, label, log):
            continue
        log(f"  [escape] {label}")
        t0 = time.perf_counter()
        res = study_variant(problem, variant, sampler, eta=cfg["eta"], steps=cfg["steps"], every=cfg["every"],
                            observe=observe, num_runs=cfg["num_runs"], num_paths=cfg["num_paths"],
                            key=jr.key(cfg["seed"] * 1000 + i), rungs=_rungs(variant, cfg), svag=cfg["svag"],
                            max_refine=cfg["max_refine"], key_observable="outside", num_samples=cfg["drift_samples"],
                            momentum=_momentum(cfg), log=log)
        res["m"] = variant.rule.ascent_batch_size(cfg["batch_size"], cfg["n"])  # the m of the ascent gradient g_m
        res["wall_s"] = time.perf_counter() - t0
        result["variants"][label] = res
        if on_variant is not None:
            on_variant(result)
    return result


def _reuse(result: dict, done: dict | None, label: str, log) -> bool:
    """Take variant ``label`` from ``done`` (an earlier, interrupted run of the same config) when it is there.
    Each variant's keys depend on its index and the seed alone, so a reused result equals a recomputed one."""
    if not done or label not in done:
        return False
    result["variants"][label] = done[label]
    log(f"  {label}: reusing the result of an earlier run with the same config")
    return True


def _momentum(cfg) -> ss.Momentum | None:
    """``cfg["momentum"]`` (``{"beta": ..., "nesterov": ...}``) as a :class:`~sde_sam.Momentum`; absent: none."""
    m = cfg.get("momentum")
    return None if not m else ss.Momentum(**m)


def _rungs(variant, cfg) -> list[Rung]:
    """The ladder of ``drifts x diffusions x orders`` defined for ``variant``; ``cfg["rungs"]`` (labels such as
    ``"expected/empirical/o1"``), when given, keeps only those."""
    rungs = ladder(variant, tuple(cfg["drifts"]), tuple(cfg["diffusions"]), tuple(cfg["orders"]))
    keep = cfg.get("rungs")
    return rungs if keep is None else [r for r in rungs if r.label in keep]


# -- (b) digits-MLP training -------------------------------------------------------------------------------------


def training(cfg: dict, log=print, done=None, on_variant=None) -> dict:
    """The ladder on digits-MLP training: every observable in ``cfg["observables"]`` on both sides (``done``,
    ``on_variant``: as :func:`escape`)."""
    pname, pkw = cfg["problem"]
    base = train.TrainConfig(problem=pname, problem_kwargs=pkw, batch_size=cfg["batch_size"], eta=cfg["eta"],
                             steps=cfg["steps"], every=cfg["every"], seeds=(0,), observables=tuple(cfg["observables"]))
    problem = train.build_problem(base)
    sampler = ss.UniformSubset(cfg["batch_size"])
    result = {"problem": problem.name, "sampler": type(sampler).__name__, "variants": {},
              "observables": list(cfg["observables"])}
    for i, spec in enumerate(cfg["variants"]):
        label, variant = _variant(spec)
        if _reuse(result, done, label, log):
            continue
        config = base.replace(variant=spec[1], variant_kwargs=spec[2], label=label)
        est = train.Estimators.of(config, variant, problem)

        def observe(kind, out, est=est):
            params = out.saved_params if kind == "runs" else out.paths
            vals = train.evaluate(est, cfg["observables"], problem, params)
            bad = np.isnan(out.values["loss"])
            return {n: np.where(bad, np.nan, np.asarray(v, np.float64)) for n, v in vals.items()}

        log(f"  [training] {label}")
        t0 = time.perf_counter()
        res = study_variant(problem, variant, sampler, eta=cfg["eta"], steps=cfg["steps"], every=cfg["every"],
                            observe=observe, num_runs=cfg["num_runs"], num_paths=cfg["num_paths"],
                            key=jr.key(cfg["seed"] * 1000 + i), rungs=_rungs(variant, cfg), svag=cfg["svag"],
                            max_refine=cfg["max_refine"], key_observable=cfg["key_observable"], stat="final",
                            num_samples=cfg["drift_samples"], momentum=_momentum(cfg), log=log)
        res["wall_s"] = time.perf_counter() - t0
        result["variants"][label] = res
        if on_variant is not None:
            on_variant(result)
    return result


# -- the study ----------------------------------------------------------------------------------------------------

PRESETS = {
    "tiny": dict(
        escape=dict(seed=0, n=16, sharp_curvature=16.0, noise_scale=0.2, batch_size=8, eta=0.05, steps=20, every=10,
                    num_runs=16, num_paths=16, drift_samples=4, variants=[["m-SAM (m=1)", "m-sam", {"rho": 0.1, "micro_batch_size": 1}]],
                    drifts=["general", "expected"], diffusions=["leading"], orders=[1], svag=[1, 2], max_refine=1),
        training=dict(seed=0, problem=["digits_mlp", {"hidden": 4}], batch_size=16, eta=0.1, steps=4, every=2,
                      num_runs=3, num_paths=3, drift_samples=2, key_observable="loss", observables=["loss", "trace_sigma"],
                      variants=[["SAM", "sam", {"rho": 0.05}]], drifts=["expected"], diffusions=["leading"], orders=[1],
                      svag=[1], max_refine=0)),
    # the full preset's training problem and SDE step under heavy-ball momentum 0.9: eta = 0.01, so the rescaled
    # step eta / (1 - beta) = 0.1 and the horizon t = 20 equal the full preset's (a ladder with and without momentum)
    "momentum": dict(
        escape=None,
        training=dict(seed=0, problem=["digits_mlp", {"hidden": 16}], batch_size=64, eta=0.01,
                      momentum={"beta": 0.9, "nesterov": False}, steps=200, every=50, num_runs=16, num_paths=16,
                      drift_samples=8, key_observable="loss",
                      observables=["loss", "accuracy", "trace_sigma", "lambda_max"],
                      variants=[["SGD", "sgd", {}], ["SAM", "sam", {"rho": 0.05}],
                                ["m-SAM (m=4)", "m-sam", {"rho": 0.05, "micro_batch_size": 4}]],
                      drifts=["general", "expected"], diffusions=["leading", "empirical"], orders=[1], svag=[1],
                      max_refine=1)),
    # the same problem inside the rescaled model's validity, eta lambda_max / (1 - beta)^2 << 1 (measured about 0.04
    # here against about 14 above): SGD with momentum 0.9 at eta = 1e-4 (rescaled step 1e-3), 2000 steps to t = 2
    "momentum_small_step": dict(
        escape=None,
        training=dict(seed=0, problem=["digits_mlp", {"hidden": 16}], batch_size=64, eta=1e-4,
                      momentum={"beta": 0.9, "nesterov": False}, steps=2000, every=500, num_runs=16, num_paths=16,
                      drift_samples=8, key_observable="loss",
                      observables=["loss", "accuracy", "trace_sigma", "lambda_max"],
                      variants=[["SGD", "sgd", {}]], drifts=["general"], diffusions=["leading"], orders=[1],
                      svag=[1], max_refine=0)),
    "quick": preset("quick")["fidelity"],
    "full": preset("full")["fidelity"],
}


def run(cfg: dict, log=print, previous: dict | None = None, checkpoint=None) -> dict:
    """Both parts of the study for a config dict (``PRESETS[name]``). ``previous``: part -> finished variants of an
    interrupted run of the same config (reused); ``checkpoint(partial)`` is called after every new variant."""
    t0 = time.perf_counter()
    out = {"config": cfg}
    previous = previous or {}
    for part, fn, title in (("escape", escape, "escape problem"), ("training", training, "digits-MLP training")):
        if not cfg.get(part):
            continue
        log(f"fidelity: {title}")

        def save(result, part=part):
            if checkpoint is not None:
                checkpoint(out | {part: result, "wall_s": time.perf_counter() - t0})

        out[part] = fn(cfg[part], log, done=previous.get(part), on_variant=save)
    for part, key_obs, stat in _BUDGETS:  # variants reused from a result saved before the rows were part of it
        for res in out.get(part, {}).get("variants", {}).values():
            if "budget" not in res:
                res["budget"] = budget_rows(res, key_obs or cfg["training"]["key_observable"], stat)
    out["wall_s"] = time.perf_counter() - t0
    return out


def tables(result: dict) -> str:
    """The error-budget tables (markdown), one per variant and problem."""
    lines = []
    for part, key_obs, stat in _BUDGETS:
        if part not in result:
            continue
        key_obs = key_obs or result["config"]["training"]["key_observable"]
        for label, res in result[part]["variants"].items():
            lines.append(f"\n**{part}: {label}** ({key_obs}, {stat.replace('_', '-')}; discrete "
                         f"{res['discrete']['final'][key_obs][0]:.4f} ± {res['discrete']['final'][key_obs][1]:.4f} "
                         f"at the end; best model: {best_model(res, key_obs, stat)}"
                         + ("" if "momentum" not in res else
                            f"; momentum beta = {res['momentum']['beta']}, SDE step h = eta / (1 - beta)") + ")\n")
            unit = "eta" if "momentum" not in res else "h"
            lines.append(f"| model | dt | gap ± s.e. | z | gap at dt = {unit} | refinement removes | tracks (abs z < 3) "
                         "| diverged |")
            lines.append("|---|---|---|---|---|---|---|---|")
            for r in budget_rows(res, key_obs, stat):
                at_eta = "" if "gap_at_eta" not in r else f"{r['gap_at_eta']:+.4f} ± {r['stderr_at_eta']:.4f}"
                rem = "" if r["refinement_removes"] is None else f"{100 * r['refinement_removes']:.0f} %"
                lines.append(f"| {r['model']} | {r['dt']} | {r['gap']:+.4f} ± {r['stderr']:.4f} | {r['z']:+.1f} | "
                             f"{at_eta} | {rem} | {r['tracks']} | {r['diverged']} |")
    return "\n".join(lines)


def _previous(path: Path, cfg: dict, log) -> dict:
    """Part -> finished variants stored at ``path`` by an earlier run of the same config (else nothing)."""
    if not result_paths(path)[0].exists():
        return {}
    try:
        _, prev = load_result(path)
    except (OSError, ValueError) as err:
        moved = quarantine(path)
        log(f"{result_paths(path)[0]} unreadable ({err}); starting afresh (kept as {[p.name for p in moved]})")
        return {}
    if not isinstance(prev, dict) or prev.get("config") != to_jsonable(cfg):
        return {}
    return {part: prev[part]["variants"] for part in ("escape", "training") if isinstance(prev.get(part), dict)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="study size (default: quick)")
    ap.add_argument("--out", type=Path, required=True, help="folder for fidelity.json (fidelity-<part>.json with --part)")
    ap.add_argument("--part", choices=("escape", "training", "both"), default="both",
                    help="which problem of the study to run (default: both)")
    ap.add_argument("--fresh", action="store_true",
                    help="recompute every variant (default: reuse those an interrupted run into OUT finished)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = dict(PRESETS[args.preset])
    if args.part != "both":
        cfg[{"escape": "training", "training": "escape"}[args.part]] = None
    name = "fidelity" if args.part == "both" else f"fidelity-{args.part}"
    path = args.out / name
    log = lambda s: print(s, flush=True)  # noqa: E731
    previous = {} if args.fresh else _previous(path, cfg, log)
    meta = {"preset": args.preset, "part": args.part, "provenance": provenance()}
    res = run(cfg, log=log, previous=previous,
              checkpoint=lambda partial: save_result(path, None, meta | partial | {"complete": False}))
    save_result(path, None, meta | res | {"complete": True})
    print(tables(res))
    print(f"total {res['wall_s']:.1f} s -> {args.out / (name + '.json')}")
    return res


if __name__ == "__main__":
    main()
