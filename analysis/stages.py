"""The stages of ``sde-sam reproduce`` (DESIGN §7, §8): each a pure function ``config -> {"data", "arrays"}``.

Stages reuse the library (``sde_sam``) and the analyses (:mod:`analysis.weak_order`, :mod:`analysis.m_sharpness`,
:mod:`analysis.training_vs_sde`); the figures and checks only read their results. Presets (``quick``/``full``)
are in :data:`PRESETS`; a stage's cache key is the hash of its config (:mod:`analysis.pipeline`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.flatten_util import ravel_pytree

import sde_sam as ss
from analysis.escape import ESCAPE_MODELS, escape_problem, escape_variants
from stage_types import (
    DriftConfig,
    DriftData,
    EscapeConfig,
    EscapeData,
    EscapeHead,
    EscapeMap,
    EscapeMapPoint,
    EscapeMapRow,
    EscapeRow,
    EscapeStats,
    EtaMapConfig,
    EtaMapData,
    EtaMapPoint,
    EtaMapVariant,
    EtaRhoConfig,
    EtaRhoData,
    FidelityConfig,
    FidelityData,
    GeneralizationConfig,
    GeneralizationData,
    GradNormConfig,
    GradNormData,
    GradNormRow,
    Output,
    SamOnRow,
    SgnConfig,
    SgnData,
    SgnRow,
    SlopeFit,
    SvagReading,
    SymbolicConfig,
    SymbolicData,
    TimingConfig,
    TimingData,
    TimingRow,
    TrainingConfig,
    TrainingData,
    TrainingRow,
    TrainSdeConfig,
    TrainSdeData,
    VarianceTermConfig,
    VarianceTermData,
    VarianceTermRow,
    Verdict,
    WeakOrderConfig,
    WeakOrderData,
)


@contextlib.contextmanager
def x64():
    """Float64 inside the block (JAX's flag is process-global: restored on exit)."""
    old = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", old)


def _flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0])


def _slope(xs, ys) -> SlopeFit:
    """Least-squares slope of ``log y`` on ``log x`` with its standard error."""
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    A = np.stack([lx, np.ones_like(lx)], 1)
    coef, _res, *_ = np.linalg.lstsq(A, ly, rcond=None)
    dof = max(len(lx) - 2, 1)
    s2 = float(np.sum((ly - A @ coef) ** 2)) / dof
    cov = s2 * np.linalg.inv(A.T @ A)
    return {"slope": float(coef[0]), "slope_stderr": float(math.sqrt(max(cov[0, 0], 0.0))), "log_c": float(coef[1])}


# -- small smooth problem with exact batch expectations --------------------------------------------------------


def tiny_problem(n: int, seed: int):
    """Two-layer tanh teacher-student (smooth), ``n`` examples, parameters ``{"w1", "w2"}``; float64."""
    return ss.problems.teacher_student(n=n, input_dim=3, teacher_width=2, student_width=2, seed=seed).with_dtype(
        jnp.float64
    )


def drift_variants(rho: float, m: int) -> dict:
    """Every variant of DESIGN §2 (RW-SAM with the exact score, SAM-ON perturbing ``w2``)."""
    V = ss.variants
    head = lambda p: p == "w2"  # noqa: E731
    return {
        "USAM": V.usam(rho),
        "SAM": V.sam(rho),
        "n-USAM": V.n_usam(rho),
        "n-SAM": V.n_sam(rho),
        f"m-USAM (m={m})": V.m_usam(rho, m),
        f"m-SAM (m={m})": V.m_sam(rho, m),
        "F-USAM": V.f_usam(rho),
        "F-SAM": V.f_sam(rho),
        "USAM-ON": V.sam_on(rho, mask=head, normalize=False),
        "SAM-ON": V.sam_on(rho, mask=head),
        "RW-USAM": V.rw_usam(rho, score="exact"),
        "RW-SAM": V.rw_sam(rho, score="exact"),
        "RW-SAM (descent)": V.rw_sam(rho, score="exact", weights_in_descent=True),
    }


def exact_step_mean(problem, variant, sampler, params):
    """``E_xi[G(x; xi)]`` of the discrete step, by enumeration of every batch (state: the SDE's, ``mu = g``)."""
    dist = ss.sde.batch_distribution(
        sampler.with_replacement, problem.num_examples, sampler.batch_size, dtype=jnp.float64
    )
    if not dist.exact:
        raise ValueError("exact_step_mean needs an enumerable batch distribution")
    state = ss.sde.sde_state(problem, variant, params)

    @jax.jit
    def mean(idx, probs):
        G = jax.vmap(
            lambda i: ravel_pytree(variant.gradient(problem, params, state, problem.take(i), jr.key(0))[0])[0]
        )(idx)
        return probs @ G

    return np.asarray(mean(dist.indices, dist.probs))


def stage_drift(cfg: DriftConfig | Mapping[str, Any]) -> Output[DriftData]:
    """Claims C1, C2 (exact part), C8, C9: exact expected steps on a small smooth problem in float64.

    * residual ``||E[G] - b_closed||`` over ``rho`` for every variant (slope 2 expected, DESIGN §3.1);
    * coefficient of ``(rho/2) grad tr Sigma`` in ``E[G] - (g + (rho/2) grad||g||^2)`` for n-USAM (0) and m-USAM (c(m));
    * coefficient of ``(rho/2) grad||g||^2`` in F-USAM's ``E[G] - g - (rho/2) c(B) grad tr Sigma`` (``1 - sigma``);
    * USAM-ON against the masked and the unmasked closed forms (independent jax.grad formulas).
    """
    cfg = DriftConfig.from_dict(cfg)
    with x64():
        problem = tiny_problem(cfg.n, cfg.seed)
        params = problem.init_params
        n, B = problem.num_examples, cfg.batch_size
        sampler = ss.WithReplacement(B)
        g = _flat(problem.full_grad(params))

        def per_example(p):
            return jax.vmap(lambda ex: ravel_pytree(jax.grad(problem.loss_fn)(p, ex))[0])(problem.data)

        def flat_grad_of(R):
            return _flat(jax.grad(lambda p: R(p))(params))

        cB = sampler.factor(B, n)
        grad_g2 = flat_grad_of(lambda p: jnp.sum(jnp.mean(per_example(p), 0) ** 2))

        def tr_sigma(p):
            G = per_example(p)
            return jnp.mean(jnp.sum(G**2, 1)) - jnp.sum(jnp.mean(G, 0) ** 2)

        grad_trs = flat_grad_of(tr_sigma)

        # C1: residual against the closed forms, per variant.
        residuals: dict[str, list[float]] = {}
        for _i, rho in enumerate(cfg.rhos):
            for name, v in drift_variants(rho, cfg.m).items():
                EG = exact_step_mean(problem, v, sampler, params)
                b = _flat(ss.sde.closed_form_drift(problem, v, sampler, params))
                residuals.setdefault(name, []).append(float(np.linalg.norm(EG - b)))

        # C2: n-USAM vs m-USAM coefficient of (rho/2) grad tr Sigma, exact, at the smallest rhos.
        coef: dict[str, list[float]] = {}
        ms = [m for m in cfg.coef_ms if B % m == 0]
        for rho in cfg.coef_rhos:
            base = g + 0.5 * rho * grad_g2
            v = 0.5 * rho * grad_trs
            for name, var in [("n-USAM", ss.variants.n_usam(rho))] + [
                (f"m-USAM (m={m})", ss.variants.m_usam(rho, m)) for m in ms
            ]:
                EG = exact_step_mean(problem, var, sampler, params)
                coef.setdefault(name, []).append(float((EG - base) @ v / (v @ v)))

        # C8: F-USAM's ||g||^2 coefficient, 1 - sigma.
        fcoef: dict[str, float] = {}
        rho = cfg.coef_rhos[-1]
        u = 0.5 * rho * grad_g2
        for sigma in cfg.sigmas:
            var = ss.variants.f_usam(rho, sigma=sigma)
            EG = exact_step_mean(problem, var, sampler, params)
            fcoef[str(sigma)] = float((EG - g - 0.5 * rho * cB * grad_trs) @ u / (u @ u))
        f_rho = rho

        # C9: USAM-ON against the masked / unmasked regularizers (our own formulas).
        P = _flat(
            jax.tree_util.tree_map(lambda a: jnp.full(a.shape, 0.0), params) | {"w2": jnp.ones_like(params["w2"])}
        )

        def reg(p, mask):
            G = per_example(p) * mask
            gm = jnp.mean(G, 0)
            return jnp.sum(gm**2) + cB * (jnp.mean(jnp.sum(G**2, 1)) - jnp.sum(gm**2))

        on: list[SamOnRow] = []
        for rho in cfg.coef_rhos:
            EG = exact_step_mean(
                problem, ss.variants.sam_on(rho, mask=lambda p: p == "w2", normalize=False), sampler, params
            )
            b_masked = g + 0.5 * rho * flat_grad_of(lambda p: reg(p, jnp.asarray(P)))
            b_full = g + 0.5 * rho * flat_grad_of(lambda p: reg(p, jnp.ones_like(jnp.asarray(P))))
            size = np.linalg.norm(b_masked - g)
            on.append(
                {
                    "rho": rho,
                    "rel_err_masked": float(np.linalg.norm(EG - b_masked) / size),
                    "rel_err_unmasked": float(np.linalg.norm(EG - b_full) / size),
                }
            )
        # the perturbation of every enumerated batch on the unmasked coordinates
        v_on = ss.variants.sam_on(cfg.coef_rhos[0], mask=lambda p: p == "w2")
        dist = ss.sde.batch_distribution(True, n, B, dtype=jnp.float64)
        eps = jax.vmap(lambda i: _perturbation(problem, v_on, params, problem.take(i)))(dist.indices)
        data: DriftData = {
            "problem": problem.name,
            "n": n,
            "B": B,
            "d": int(g.size),
            "rhos": list(cfg.rhos),
            "trace_sigma": float(tr_sigma(params)),
            "c_B": cB,
            "residuals": residuals,
            "residual_fits": {k: _slope(cfg.rhos, r) for k, r in residuals.items()},
            "variance_coefficient": {
                "rhos": list(cfg.coef_rhos),
                "values": coef,
                "expected": {"n-USAM": 0.0, **{f"m-USAM (m={m})": sampler.factor(m, n) for m in ms}},
            },
            "f_usam_grad_norm_coefficient": {
                "rho": f_rho,
                "values": fcoef,
                "expected": {str(s): 1.0 - s for s in cfg.sigmas},
            },
            "sam_on": {
                "rows": on,
                "max_unmasked_perturbation": float(jnp.max(jnp.abs(eps * (1 - P)))),
                "max_masked_perturbation": float(jnp.max(jnp.abs(eps * P))),
                "masked_leaf": "w2",
                "num_masked": int(P.sum()),
                "d": int(P.size),
            },
        }
    return {"data": data}


def _perturbation(problem, variant, params, batch):
    eps, _, _, _ = variant.perturbations(problem, params, variant.init(params), batch, jr.key(0))
    return ravel_pytree(jax.tree_util.tree_map(lambda a: a[0], eps))[0]


# -- F4 / C2 with Monte Carlo: the variance term's coefficient on a real dataset ------------------------------


def stage_variance_term(cfg: VarianceTermConfig | Mapping[str, Any]) -> Output[VarianceTermData]:
    """F4: ``D_m = E[G^{m-USAM} - G^{n-USAM}] / (rho/2)`` projected on ``grad tr Sigma`` against ``c(m)`` (and
    ``c(m) tr Sigma``), common batches for both variants; per-batch coefficients give the standard error.
    Two estimators: the general first-order rule (``linearized_update``, DESIGN §3.1) and the discrete step."""
    cfg = VarianceTermConfig.from_dict(cfg)
    with x64():
        base = ss.problems.breast_cancer_logistic(l2=cfg.l2).with_dtype(jnp.float64)
        x = jax.tree_util.tree_map(
            lambda a: a + cfg.init_scale * jr.normal(jr.key(cfg.seed), a.shape, a.dtype), base.init_params
        )
        problem = dataclasses.replace(base, init_params=x)
        n, B, rho, K = problem.num_examples, cfg.batch_size, cfg.rho, cfg.num_batches
        sampler = ss.WithReplacement(B)
        trs = float(ss.noise.trace_sigma(problem, x))
        v = 0.5 * rho * _flat(ss.noise.grad_trace_sigma(problem, x))
        keys = jr.split(jr.key(cfg.seed + 1), K)
        idx = jax.vmap(lambda k: sampler.indices(k, 0, n))(keys)
        nv = ss.variants.n_usam(rho)
        rows: list[VarianceTermRow] = []
        for m in cfg.ms:
            mv = ss.variants.m_usam(rho, m)

            @jax.jit
            def coefs(idx, mv=mv):
                def one(i):
                    batch = problem.take(i)
                    lin = (
                        ravel_pytree(ss.sde.linearized_update(problem, mv, x, (), batch, jr.key(0)))[0]
                        - ravel_pytree(ss.sde.linearized_update(problem, nv, x, (), batch, jr.key(0)))[0]
                    )
                    dis = (
                        ravel_pytree(mv.gradient(problem, x, (), batch, jr.key(0))[0])[0]
                        - ravel_pytree(nv.gradient(problem, x, (), batch, jr.key(0))[0])[0]
                    )
                    return lin @ v / (v @ v), dis @ v / (v @ v)

                return jax.vmap(one)(idx)

            lin, dis = (np.asarray(a) for a in coefs(idx))
            c = sampler.factor(m, n)
            (lin_m, lin_se), (dis_m, dis_se) = ss.mean_stderr(lin), ss.mean_stderr(dis)
            rows.append(
                {
                    "m": m,
                    "c_m": c,
                    "coef_general": float(lin_m),
                    "coef_general_stderr": float(lin_se),
                    "coef_discrete": float(dis_m),
                    "coef_discrete_stderr": float(dis_se),
                }
            )
    return {
        "data": {
            "problem": problem.name,
            "n": n,
            "B": B,
            "rho": rho,
            "num_batches": K,
            "trace_sigma": trs,
            "rows": rows,
        }
    }


# -- Prop. 3.9: E||g_gamma|| against the batch size ------------------------------------------------------------


def stage_grad_norm(cfg: GradNormConfig | Mapping[str, Any]) -> Output[GradNormData]:
    cfg = GradNormConfig.from_dict(cfg)
    problem = ss.problems.breast_cancer_logistic()
    x = jax.tree_util.tree_map(lambda a: a + 0.1 * jr.normal(jr.key(cfg.seed), a.shape, a.dtype), problem.init_params)
    rows: list[GradNormRow] = []
    for b in cfg.batch_sizes:
        est = ss.noise.expected_batch_grad_norm(
            problem, x, ss.WithoutReplacement(b), jr.key(cfg.seed + b), num_batches=cfg.num_batches
        )
        rows.append({"B": b, "value": float(est.value.value), "stderr": float(est.value.stderr)})
    g = float(np.linalg.norm(_flat(problem.full_grad(x))))
    return {"data": {"problem": problem.name, "n": problem.num_examples, "rows": rows, "full_grad_norm": g}}


# -- weak order (F3, C4) and the (eta, rho) map (F7) ----------------------------------------------------------


def stage_weak_order(cfg: WeakOrderConfig | Mapping[str, Any]) -> Output[WeakOrderData]:
    cfg = WeakOrderConfig.from_dict(cfg)
    from analysis import weak_order as wo

    config = dataclasses.replace(wo.Config(), **cfg.config)
    res = wo.run(config, log=lambda s: None, parts=cfg.parts)
    return {"data": cast(WeakOrderData, res)}


def stage_eta_rho(cfg: EtaRhoConfig | Mapping[str, Any]) -> Output[EtaRhoData]:
    cfg = EtaRhoConfig.from_dict(cfg)
    from analysis import weak_order as wo

    res = wo.eta_rho_exact(
        wo.linreg_problem(),
        ss.WithReplacement(2),
        tuple(cfg.etas),
        tuple(cfg.rhos),
        t1=cfg.t1,
        log=lambda s: None,
    )
    return {"data": cast(EtaRhoData, res)}


# -- F1 / C5: escape from the sharp basin ---------------------------------------------------------------------


def escape_stats(v: np.ndarray) -> EscapeStats:
    """Final and time-averaged fraction past the barrier (mean and s.e. over the runs or paths, the rows of ``v``)
    of the runs that did not diverge (rows without NaN), and how many were kept."""
    kept = v[~np.any(np.isnan(v), axis=1)]
    n = kept.shape[0]
    final, time_avg = ss.mean_stderr(kept[:, -1]), ss.mean_stderr(kept.mean(1))
    return {
        "final": float(final[0]),
        "final_stderr": float(final[1]),
        "time_avg": float(time_avg[0]),
        "time_avg_stderr": float(time_avg[1]),
        "kept": int(n),
    }


def escape_setup(cfg: EscapeConfig | Mapping[str, Any]):
    """The escape problem of ``cfg``, its sampler (:class:`~sde_sam.UniformSubset`), the record of ``outside`` every
    ``cfg.every`` steps, and the head of the stage's data (problem, barrier, sampler, ``B``) that C5 reads
    beside the rows and the map: one place for the stage and the map alone (``analysis.escape_map``)."""
    cfg = EscapeConfig.from_dict(cfg)
    problem, barrier, outside = escape_problem(
        n=cfg.n, sharp_curvature=cfg.sharp_curvature, noise_scale=cfg.noise_scale, seed=cfg.seed
    )
    sampler = ss.UniformSubset(cfg.batch_size)
    rec = ss.observables(outside=outside, every=cfg.every)
    head: EscapeHead = {
        "problem": problem.name,
        "barrier": barrier,
        "sampler": type(sampler).__name__,
        "B": cfg.batch_size,
    }
    return problem, sampler, rec, head


def stage_escape(cfg: EscapeConfig | Mapping[str, Any]) -> Output[EscapeData]:
    """Fraction of paths past the sharp basin's true barrier over time, per m and n-SAM: the discrete runs and
    each model of the ladder in ``cfg.models`` (drift, diffusion; order 1, ``dt = eta``), batches from
    :class:`~sde_sam.UniformSubset` (the sampler the SDE models exactly). Diverged runs/paths are counted and
    left out of every mean (their rows are NaN)."""
    cfg = EscapeConfig.from_dict(cfg)
    problem, sampler, rec, head = escape_setup(cfg)
    models = [tuple(m) for m in (ESCAPE_MODELS if cfg.models is None else cfg.models)]
    arrays: dict[str, Any] = {}
    rows: dict[str, EscapeRow] = {}
    for i, (label, v) in enumerate(escape_variants(cfg.rho, cfg.batch_size).items()):
        runs = ss.run_discrete(
            problem,
            v,
            sampler,
            eta=cfg.eta,
            steps=cfg.steps,
            num_runs=cfg.num_runs,
            key=jr.key(cfg.seed + i),
            record=rec,
        )
        d = runs.values["outside"]
        arrays[f"discrete__{i}"] = d
        row: EscapeRow = {
            "index": i,
            "m": getattr(v.rule, "micro_batch_size", None) or 0,
            "discrete": escape_stats(d),
            "diverged": {"discrete": int(runs.num_diverged)},
            "models": {},
        }
        for j, (drift, diffusion) in enumerate(models):
            model = ss.sde_model(
                problem, v, sampler, eta=cfg.eta, diffusion=diffusion, drift=drift, num_samples=cfg.drift_samples
            )
            paths = ss.simulate(
                model, t1=cfg.steps * cfg.eta, num_paths=cfg.num_paths, key=jr.key(10_000 + i), record=rec
            )
            s = paths.values["outside"]
            name = f"{drift}/{diffusion}"
            arrays[f"sde__{i}__{j}"] = s
            row["models"][name] = {**escape_stats(s), "index": j}
            row["diverged"][name] = int(paths.num_diverged)
        rows[label] = row
        arrays["times"] = runs.times
    data: EscapeData = {
        "problem": head["problem"],
        "barrier": head["barrier"],
        "sampler": head["sampler"],
        "rows": rows,
        "models": [f"{a}/{b}" for a, b in models],
        "eta": cfg.eta,
        "rho": cfg.rho,
        "B": head["B"],
    }
    if cfg.map is not None:
        data["map"] = escape_map(problem, sampler, rec, cfg)
    return {"data": data, "arrays": arrays}


def escape_map(
    problem,
    sampler,
    rec,
    cfg: EscapeConfig | Mapping[str, Any],
    *,
    done: Sequence[EscapeMapPoint] = (),
    on_point: Callable[[list[EscapeMapPoint]], None] | None = None,
) -> EscapeMap:
    """C5 over its regime: at every ``eta`` of ``cfg.map.etas`` and ``rho = rho_lambda / sharp_curvature`` for
    each ``rho_lambda`` of ``cfg.map.rho_lambdas``, the time-averaged fraction past the barrier of m-SAM at
    each m (1, 2, 4, ..., B) from ``num_runs`` discrete runs of ``steps`` steps, and of the model
    ``cfg.map.model`` (drift, diffusion) from ``num_paths`` paths (default: as many as runs). ``rho`` and
    ``eta`` are traced, so the map compiles one program per m and side.
    The same keys at every point (common random numbers across the map), so a point does not depend on the others:
    the points of ``done`` (an earlier run's, same config) are taken as they are, and ``on_point(points)`` hears
    of the points so far as each one ends (to keep them)."""
    cfg = EscapeConfig.from_dict(cfg)
    mc = cfg.map
    if mc is None:
        raise ValueError("escape_map needs a config with a `map` (an EscapeMapConfig)")
    drift, diffusion = mc.model
    num_paths = mc.num_runs if mc.num_paths is None else mc.num_paths
    earlier: dict[tuple[float, float], EscapeMapPoint] = {(p["eta"], p["rho_lambda"]): p for p in done}
    points: list[EscapeMapPoint] = []
    for eta in mc.etas:
        for rl in mc.rho_lambdas:
            if (eta, rl) in earlier:
                points.append(earlier[(eta, rl)])
                continue
            rho = rl / cfg.sharp_curvature
            rows: dict[str, EscapeMapRow] = {}
            for i, (label, v) in enumerate(escape_variants(rho, cfg.batch_size).items()):
                m = getattr(v.rule, "micro_batch_size", None)
                if m is None and label == "n-SAM":
                    continue
                runs = ss.run_discrete(
                    problem,
                    v,
                    sampler,
                    eta=eta,
                    steps=mc.steps,
                    num_runs=mc.num_runs,
                    key=jr.key(cfg.seed + i),
                    record=rec,
                    progress=False,
                )
                model = ss.sde_model(
                    problem, v, sampler, eta=eta, diffusion=diffusion, drift=drift, num_samples=cfg.drift_samples
                )
                paths = ss.simulate(
                    model,
                    t1=mc.steps * eta,
                    num_paths=num_paths,
                    key=jr.key(10_000 + i),
                    record=rec,
                    progress=False,
                )
                rows[label] = {
                    "m": m or cfg.batch_size,
                    "discrete": escape_stats(runs.values["outside"]),
                    "model": escape_stats(paths.values["outside"]),
                    "diverged": {"discrete": int(runs.num_diverged), "model": int(paths.num_diverged)},
                }
            points.append({"eta": eta, "rho": rho, "rho_lambda": rl, "rows": rows})
            if on_point is not None:
                on_point(points)
    return {
        "points": points,
        "model": f"{drift}/{diffusion}",
        "num_runs": mc.num_runs,
        "num_paths": num_paths,
        "steps": mc.steps,
        "theory_rho_lambda": mc.theory_rho_lambda,
        "sharp_curvature": cfg.sharp_curvature,
    }


# -- the eta map of digits training (C10) ----------------------------------------------------------------------


def stage_eta_map(cfg: EtaMapConfig | Mapping[str, Any], out=None) -> Output[EtaMapData]:
    """C10 over its regime: :func:`sde_sam.validity_map` of each variant in ``cfg.variants`` over ``cfg.etas``
    on the problem ``cfg.problem`` (``[name, kwargs]`` of :func:`sde_sam.train.build_problem`; ``cfg.problems``:
    several, each variant labelled with its problem), rungs ``cfg.rungs`` (``[drift, diffusion, order]``, those the
    variant supports), SVAG at ``cfg.svag``. Monte Carlo drifts take ``cfg.drift_samples`` batches per call,
    sampled diffusions ``cfg.diffusion_samples`` (absent: the diffusion's default). Per variant and eta: the
    verdict per observable, SVAG's agreement at its largest ``l`` and the best rung."""
    cfg = EtaMapConfig.from_dict(cfg)
    from sde_sam import train

    problems = cfg.all_problems
    sampler = ss.UniformSubset(cfg.batch_size)
    record = ss.observables(*cfg.observables, every=cfg.every)
    dif_options = {"num_samples": cfg.diffusion_samples} if cfg.diffusion_samples is not None else {}
    variants: dict[str, EtaMapVariant] = {}
    names: list[str] = []
    for pname, pkw in problems:
        problem = train.build_problem(train.TrainConfig(problem=pname, problem_kwargs=pkw))
        names.append(problem.name)
        for label, name, kw in cfg.variants:
            variant = ss.variants.get(name, **kw)
            rungs = [
                r
                for r in (
                    ss.validation.Rung(
                        ss.sde.as_drift(d, num_samples=cfg.drift_samples), ss.sde.as_diffusion(dif, **dif_options), o
                    )
                    for d, dif, o in cfg.rungs
                )
                if r.supports(variant)
            ]
            vmap_ = ss.validity_map(
                problem,
                variant,
                sampler,
                etas=cfg.etas,
                steps=cfg.steps,
                num_runs=cfg.num_runs,
                key=jr.key(cfg.seed),
                rungs=rungs,
                svag=tuple(cfg.svag),
                max_refine=cfg.max_refine,
                record=record,
                progress=False,
                out=None if out is None else Path(out) / f"eta_map_{problem.name}_{name}",
            )
            points: list[EtaMapPoint] = []
            for eta in cfg.etas:
                v = vmap_.at(eta, float(variant.rho), getattr(variant.rule, "micro_batch_size", None))
                top = max(v.svag) if v.svag else None
                points.append(
                    {
                        "eta": eta,
                        "verdicts": {o: cast(Verdict, x.to_dict()) for o, x in v.verdicts.items()},
                        "svag": {
                            o: (None if top is None else cast(SvagReading, v.svag[top][o].to_dict()))
                            for o in v.verdicts
                        },
                        "tau": v.tau,
                        "compiles": v.compiles,
                    }
                )
            key = label if len(problems) == 1 else f"{label} on {problem.name}"
            variants[key] = {
                "points": points,
                "compiles": vmap_.compiles,
                "compile_s": vmap_.compile_s,
                "wall_s": vmap_.wall_s,
                "table": str(vmap_),
                "rungs": [r.label for r in rungs],
            }
    return {
        "data": {
            "problem": ", ".join(names),
            "batch_size": cfg.batch_size,
            "steps": cfg.steps,
            "num_runs": cfg.num_runs,
            "etas": list(cfg.etas),
            "diffusion_samples": dif_options.get("num_samples", ss.sde.EmpiricalDiffusion().num_samples),
            "observables": list(cfg.observables),
            "variants": variants,
        }
    }


# -- the fidelity ladder (F9, C10) -------------------------------------------------------------------------------


def stage_fidelity(cfg: FidelityConfig | Mapping[str, Any]) -> Output[FidelityData]:
    """The error budget of every variant against each model of the ladder (``analysis.fidelity``)."""
    cfg = FidelityConfig.from_dict(cfg)
    from analysis import fidelity

    res = fidelity.run(cfg.to_dict(), log=lambda s: None)
    return {"data": cast(FidelityData, res)}


# -- training: tr Sigma per variant (F2 real curves, F6, C6) -------------------------------------------------


def stage_training(cfg: TrainingConfig | Mapping[str, Any]) -> Output[TrainingData]:
    cfg = TrainingConfig.from_dict(cfg)
    import tempfile
    from pathlib import Path

    from analysis import m_sharpness as ms

    with tempfile.TemporaryDirectory() as tmp:
        plain = cfg.to_dict()  # the study's own config: JSON lists and dicts, as its presets hold them
        rows = cast(
            dict[str, TrainingRow],
            ms.trace_sigma_table(plain, cfg.problem, plain["problem_kwargs"], Path(tmp), log=lambda s: None),
        )
    return {
        "data": {
            "rows": rows,
            "claims": ms.orderings(rows, cfg.batch_size),
            "paper_reference": ms.PAPER_REFERENCE,
            "batch_size": cfg.batch_size,
            "eta": cfg.eta,
            "rho": cfg.rho,
        }
    }


def stage_generalization(cfg: GeneralizationConfig | Mapping[str, Any]) -> Output[GeneralizationData]:
    """C11, F10: test accuracy and test loss per variant at each label-noise level
    (:func:`analysis.generalization.run`; after the training stage, whose compiled programs it reuses)."""
    cfg = GeneralizationConfig.from_dict(cfg)
    import tempfile
    from pathlib import Path

    from analysis import generalization as gen

    with tempfile.TemporaryDirectory() as tmp:
        res = gen.run(cfg.to_dict(), Path(tmp), log=lambda s: None)
    return {"data": cast(GeneralizationData, res)}


def stage_train_sde(cfg: TrainSdeConfig | Mapping[str, Any]) -> Output[TrainSdeData]:
    """F2: real training against the SDE prediction of ``tr Sigma`` (:func:`analysis.training_vs_sde.run`)."""
    cfg = TrainSdeConfig.from_dict(cfg)
    from analysis import training_vs_sde as tvs

    preset = cfg.to_dict()
    preset["problem"] = tuple(preset["problem"])
    preset["variants"] = tuple(tuple(v) for v in preset["variants"])
    preset["seeds"] = tuple(preset["seeds"])
    preset["observables"] = tuple(preset["observables"])
    return {"data": cast(TrainSdeData, tvs.run(preset, None, log=lambda s: None))}


# -- F5: SGN structure along training -------------------------------------------------------------------------


def stage_sgn(cfg: SgnConfig | Mapping[str, Any]) -> Output[SgnData]:
    cfg = SgnConfig.from_dict(cfg)
    from sde_sam import train

    conf = train.TrainConfig(
        problem=cfg.problem,
        problem_kwargs=cfg.problem_kwargs,
        variant="sgd",
        batch_size=cfg.batch_size,
        eta=cfg.eta,
        steps=cfg.steps,
        every=cfg.every,
        seeds=(cfg.seed,),
        observables=("loss",),
    )
    problem = train.build_problem(conf)
    rec = train.record(conf, problem=problem, save_params=True)
    k = cfg.k
    rows: list[SgnRow] = []
    sig_spec, h_spec = [], []
    T = len(rec.steps)
    for t in range(T):
        p = jax.tree_util.tree_map(lambda a: a[0, t], rec.saved_params)
        key = jr.fold_in(jr.key(cfg.seed), t)
        se = ss.noise.sigma_top_eigs(problem, p, k, key, chunk_size=256)
        he = ss.curvature.top_eigenvalues(problem, p, k, key)
        al = ss.curvature.alignment(problem, p, key, k=k, method="stochastic", num_probes=cfg.probes, chunk_size=256)
        ti = ss.noise.tail_index(
            problem,
            p,
            ss.WithoutReplacement(cfg.batch_size),
            key,
            num_batches=cfg.tail_batches,
            num_directions=4,
            num_bootstrap=50,
        )
        sig_spec.append(np.asarray(se.values))
        h_spec.append(np.asarray(he.values))
        rows.append(
            {
                "step": int(rec.steps[t]),
                "loss": float(rec.values["loss"][0, t]),
                "cosine": float(al.cosine.value),
                "cosine_stderr": float(al.cosine.stderr),
                "overlap": float(al.overlap),
                "trace_ratio": float(al.trace_ratio.value),
                "trace_sigma": float(al.trace_sigma.value),
                "trace_hessian": float(al.trace_hessian.value),
                "tail_index": float(ti.value),
                "tail_index_stderr": float(ti.stderr),
            }
        )
    return {
        "data": {"problem": problem.name, "d": problem.dim, "k": k, "rows": rows},
        "arrays": {"sigma_eigs": np.stack(sig_spec), "hessian_eigs": np.stack(h_spec), "steps": rec.steps},
    }


# -- F8 / C7: cost per step -----------------------------------------------------------------------------------


def stage_timing(cfg: TimingConfig | Mapping[str, Any]) -> Output[TimingData]:
    """Median time per step of every variant (one jitted scan, rounds interleaved as in benchmarks/variants.py),
    the serial m-SAM (its micro-batches one after another, each a SAM step) and the SDE simulator; beside it XLA's
    flop and byte counts of one compiled step (hardware-independent), for the variants and the serial form."""
    cfg = TimingConfig.from_dict(cfg)
    from sde_sam._cost import compiled_cost, serial_m_sam_step_cost, step_cost
    from sde_sam._training._timing import interleaved_times, median_ratio, variant_calls

    problem = ss.problems.digits_mlp(hidden=cfg.hidden)
    B, rho, steps = cfg.batch_size, 0.05, cfg.steps
    sampler = ss.WithoutReplacement(B)
    V = ss.variants
    variants = {
        "SGD": V.sgd(),
        "SAM": V.sam(rho),
        "USAM": V.usam(rho),
        "n-SAM": V.n_sam(rho),
        **{f"m-SAM (m={m})": V.m_sam(rho, m) for m in cfg.ms},
        "F-SAM": V.f_sam(rho),
        "SAM-ON": V.sam_on(rho),
        "RW-SAM": V.rw_sam(rho),
        "RW-SAM (descent)": V.rw_sam(rho, weights_in_descent=True),
    }
    calls = variant_calls(problem, variants, sampler, steps, serial_micro_batch_sizes=[B // k for k in cfg.serial_k])
    for k in cfg.serial_k:  # name the serial form by its number of micro-batches k = B/m
        calls[f"serial m-SAM (k={k})"] = calls.pop(f"serial m-SAM (m={B // k})")
    # the simulator's calls take ``simulator_steps`` steps (default ``steps``): a simulator step costs hundreds of
    # variant steps here (every example's gradient for the leading diffusion)
    sim_steps = steps if cfg.simulator_steps is None else cfg.simulator_steps
    per_call = dict.fromkeys(calls, steps)
    for name in ("SGD", "n-SAM"):  # n-SAM: closed-form drift g + rho H g/||g|| (as in benchmarks/simulate.py)
        model = ss.sde_model(problem, variants[name], sampler, eta=0.05, diffusion="leading", drift="closed_form")
        rec = ss.observables("loss", every=sim_steps)
        label = f"simulator: {name} SDE ({cfg.paths} paths)"
        calls[label] = lambda model=model, rec=rec: (
            ss.simulate(model, t1=sim_steps * 0.05, num_paths=cfg.paths, key=jr.key(0), record=rec).final_params
        )
        per_call[label] = sim_steps
    samples = interleaved_times(calls, cfg.repeats, per_call)
    costs = {name: step_cost(problem, v, B) for name, v in variants.items()}
    costs |= {f"serial m-SAM (k={k})": serial_m_sam_step_cost(problem, rho, B // k, B) for k in cfg.serial_k}
    forward = compiled_cost(problem.batch_loss, problem.init_params, problem.take(jnp.arange(B))).flops
    rows: dict[str, TimingRow] = {}
    for name, s in samples.items():
        q25, q75 = np.percentile(1e3 * np.asarray(s), [25, 75])
        row: TimingRow = {
            "ms_per_step": 1e3 * statistics.median(s),
            "ms_q25": float(q25),
            "ms_q75": float(q75),
            "vs_SGD": median_ratio(samples, name, "SGD"),
            "vs_SAM": median_ratio(samples, name, "SAM"),
        }
        if name in costs:
            c = costs[name]
            row["flops"], row["bytes"], row["flops_vs_SAM"] = c.flops, c.bytes_accessed, c.flops / costs["SAM"].flops
        rows[name] = row
    return {
        "data": {
            "problem": problem.name,
            "d": problem.dim,
            "B": B,
            "steps_per_call": steps,
            "simulator_steps_per_call": sim_steps,
            "repeats": cfg.repeats,
            "device": str(jax.devices()[0]),
            "platform": jax.default_backend(),
            "forward_flops_vs_SAM": forward / costs["SAM"].flops,
            "rw_sam_extra_forwards": (costs["RW-SAM"].flops - costs["SAM"].flops) / forward,
            "rows": rows,
        }
    }


# -- symbolic drifts for the report (DESIGN §5) --------------------------------------------------------------


def stage_symbolic(cfg: SymbolicConfig | Mapping[str, Any]) -> Output[SymbolicData]:
    """The sympy report of every variant's drift and diffusion (:func:`sde_sam.symbolic.report_markdown`)."""
    cfg = SymbolicConfig.from_dict(cfg)
    from sde_sam import symbolic

    text = symbolic.report_markdown()
    # demote headings by two levels so the section nests under the reproduce report's "##"
    text = "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())
    return {"data": {"markdown": text}}
