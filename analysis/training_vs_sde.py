"""Real training against its SDE prediction, and predicted against measured gradient noise (DESIGN §6.3).

1. **Trajectories.** For each variant, ``R`` seeds of real training (``sde_sam.train.record``) and ``P``
   Euler–Maruyama paths of the variant's SDE (``sde_sam.sde_model(..., diffusion="leading", order=1)``,
   ``sde_sam.simulate``), both from the same initial point, on the grid ``t = k * eta``. Every recorded
   observable is evaluated with the same estimators on both (``sde_sam.train.evaluate``); we report the mean
   and a 95% band (``1.96`` standard errors) of each, the gap ``mean_SDE - mean_train``, its standard error
   ``sqrt(se_train^2 + se_SDE^2)`` and the relative gap ``|gap| / |mean_train|`` over time.
2. **Noise.** Along the real trajectory (seed ``0``'s parameters at the recorded steps), the SDE's leading-order
   noise covariance ``c(B) Sigma`` (exact, from per-example gradients) against the stochastic gradient noise
   measured directly: ``K`` mini-batches ``gamma_j`` drawn by the sampler's law, deviations
   ``D_j = g_gamma_j - g``, ``C = (1/K) sum_j D_j D_j^T``. Reported: ``tr C`` (with its standard error) vs
   ``c(B) tr Sigma``; the top eigenvalues of both; the cosine ``tr(C c Sigma) / (||C||_F ||c Sigma||_F)`` and
   the overlap ``||U_C^T U_Sigma||_F^2 / k`` of their top-``k`` eigenspaces (``C`` has rank ``<= K``, so its
   cosine with the full-rank ``Sigma`` is limited by ``K``; as a reference for what sampling error alone allows, the
   same statistics between two independent ``K``-batch estimates ``C``, ``C'`` are reported alongside). Computed
   densely from Gram matrices (small networks).

With ``momentum`` in the preset (``{"momentum": beta, "nesterov": bool}``; preset ``momentum``: heavy ball at
``beta = 0.9``) the runs use momentum and the SDE is the rescaled-learning-rate model (:class:`sde_sam.Momentum`).

``python -m analysis.training_vs_sde --preset quick --out DIR`` writes ``DIR/training_vs_sde.json`` and the
records of every run under ``DIR/records``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.flatten_util import ravel_pytree

import sde_sam as ss
from analysis.pipeline import earlier_result
from sde_sam import train
from sde_sam._io import provenance, save_result, to_jsonable

PRESETS = {
    "tiny": {
        "problem": ("digits_mlp", {"hidden": 8}),
        "variants": (("SGD", "sgd", {}),),
        "batch_size": 32,
        "eta": 0.1,
        "steps": 20,
        "every": 10,
        "seeds": (0, 1, 2),
        "paths": 3,
        "num_samples": 8,
        "noise_batches": 32,
        "top_k": 3,
        "observables": ("loss", "accuracy", "grad_norm_sq", "trace_sigma", "distance"),
    },
    "quick": {
        "problem": ("digits_mlp", {"hidden": 32}),
        "variants": (
            ("SGD", "sgd", {}),
            ("SAM", "sam", {"rho": 0.05}),
            ("m-SAM (m=8)", "m-sam", {"rho": 0.05, "micro_batch_size": 8}),
        ),
        "batch_size": 64,
        "eta": 0.1,
        "steps": 200,
        "every": 50,
        "seeds": tuple(range(8)),
        "paths": 8,
        "num_samples": 16,
        "noise_batches": 256,
        "top_k": 5,
        "observables": train.OBSERVABLES,
    },
    "full": {
        "problem": ("digits_mlp", {"hidden": 64}),
        "variants": (
            ("SGD", "sgd", {}),
            ("USAM", "usam", {"rho": 0.05}),
            ("SAM", "sam", {"rho": 0.05}),
            ("m-SAM (m=16)", "m-sam", {"rho": 0.05, "micro_batch_size": 16}),
            ("m-SAM (m=4)", "m-sam", {"rho": 0.05, "micro_batch_size": 4}),
            ("RW-SAM", "rw-sam", {"rho": 0.05}),
            ("F-SAM", "f-sam", {"rho": 0.05}),
            ("SAM-ON", "sam-on", {"rho": 0.05}),
        ),
        "batch_size": 64,
        "eta": 0.1,
        "steps": 1000,
        "every": 200,
        "seeds": tuple(range(16)),
        "paths": 16,
        "num_samples": 16,
        "noise_batches": 512,
        "top_k": 10,
        "observables": train.OBSERVABLES,
    },
}
# heavy-ball momentum 0.9 at eta = 0.01: the rescaled step eta / (1 - beta) = 0.1 and the horizon t = 20 of the quick
# preset, so the two compare the SDE's first-order model with and without momentum at equal SDE step and time
PRESETS["momentum"] = dict(PRESETS["quick"], eta=0.01, momentum={"momentum": 0.9, "nesterov": False})


def band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over the first axis (rows with NaN, i.e. diverged runs, left out)."""
    ok = ~np.any(np.isnan(values), axis=1)
    return ss.mean_stderr(values[ok])


def compare(train_vals: np.ndarray, sde_vals: np.ndarray) -> dict:
    """Gap statistics of one observable: train and SDE means with 95% bands, gap, its stderr, relative gap."""
    mt, st = band(train_vals)
    ms, ss_ = band(sde_vals)
    gap = ms - mt
    se = np.sqrt(st**2 + ss_**2)
    rel = np.abs(gap) / np.maximum(np.abs(mt), 1e-12)
    return {
        "train_mean": mt.tolist(),
        "train_band95": (1.96 * st).tolist(),
        "sde_mean": ms.tolist(),
        "sde_band95": (1.96 * ss_).tolist(),
        "gap": gap.tolist(),
        "gap_stderr": se.tolist(),
        "relative_gap": rel.tolist(),
        "max_relative_gap": float(np.max(rel)),
        "final_relative_gap": float(rel[-1]),
        "max_abs_z": float(np.max(np.abs(gap) / np.maximum(se, 1e-30))),
    }


def _flat(tree):
    return ravel_pytree(tree)[0]


@jax.jit
def _gram_stats(G: jnp.ndarray, D: jnp.ndarray, c: float):
    """From centred per-example gradients ``G`` (n, d) and batch deviations ``D`` (K, d): traces, Frobenius
    norms and the cross term of ``C = D^T D / K`` and ``P = c G^T G / n``."""
    n, K = G.shape[0], D.shape[0]
    tr_p = c * jnp.sum(G * G) / n
    sq = jnp.sum(D * D, axis=1)
    tr_c = jnp.mean(sq)
    tr_c_se = jnp.std(sq, ddof=1) / jnp.sqrt(K)
    fro_c = jnp.linalg.norm(D @ D.T) / K
    fro_p = c * jnp.linalg.norm(G @ G.T) / n
    cross = c * jnp.sum(jnp.square(D @ G.T)) / (K * n)
    return tr_p, tr_c, tr_c_se, cross / (fro_c * fro_p)


def _top_eigs(M: jnp.ndarray, scale: float, k: int):
    """Top-``k`` eigenpairs of ``scale * M^T M`` from the SVD of ``M`` (rows = samples)."""
    _, s, vt = jnp.linalg.svd(M, full_matrices=False)
    return scale * s[:k] ** 2, vt[:k]


def noise_along(problem, sampler, params_path, key, num_batches: int, k: int) -> dict:
    """Predicted ``c(B) Sigma`` vs measured mini-batch noise at each point of ``params_path`` (leaves ``(T, ...)``)."""
    n, B = problem.num_examples, sampler.batch_size
    c = sampler.factor(B, n)
    T = jax.tree_util.tree_leaves(params_path)[0].shape[0]

    @jax.jit
    def at(params, key):
        g_i = ss.noise.per_example_grads(problem, params, flat=True)
        g = jnp.mean(g_i, axis=0)
        G = g_i - g
        keys = jr.split(key, 2 * num_batches)

        def dev(kk):
            idx = jr.choice(kk, n, (B,), replace=sampler.with_replacement)
            return jnp.mean(g_i[idx], axis=0) - g  # the batch gradient g_gamma, from the same per-example grads

        D = jax.lax.map(dev, keys[:num_batches])
        D2 = jax.lax.map(dev, keys[num_batches:])
        tr_p, tr_c, tr_c_se, cos = _gram_stats(G, D, c)
        _, _, _, cos_ref = _gram_stats(D2, D, 1.0)  # the same statistic between two independent K-sample draws
        ev_c, u_c = _top_eigs(D, 1.0 / num_batches, k)
        _ev_c2, u_c2 = _top_eigs(D2, 1.0 / num_batches, k)
        overlap_ref = jnp.sum(jnp.square(u_c @ u_c2.T)) / k
        return {
            "pred_trace": tr_p,
            "meas_trace": tr_c,
            "meas_trace_se": tr_c_se,
            "cosine": cos,
            "cosine_ref": cos_ref,
            "meas_top": ev_c,
            "overlap_ref": overlap_ref,
        }, u_c

    rows = []
    for t in range(T):
        params = jax.tree_util.tree_map(lambda a: a[t], params_path)
        row, u_c = at(params, jr.fold_in(key, t))
        # predicted top eigenpairs of c(B) Sigma: the shared randomized estimator (DESIGN §4)
        eig = ss.noise.sigma_top_eigs(problem, params, k, jr.fold_in(key, 10_000 + t))
        row = dict(row, pred_top=c * eig.values, overlap=jnp.sum(jnp.square(u_c @ eig.vectors.T)) / k)
        rows.append(row)
    out = {name: np.stack([np.asarray(r[name]) for r in rows]).tolist() for name in rows[0]}
    pt, mt, se = (np.asarray(out[k_]) for k_ in ("pred_trace", "meas_trace", "meas_trace_se"))
    out["trace_ratio_measured_over_predicted"] = (mt / pt).tolist()
    out["trace_z"] = ((mt - pt) / np.maximum(se, 1e-30)).tolist()
    out["c_B"] = c
    out["num_batches"] = num_batches
    return out


def _previous(out: Path | None, cfg: dict, log) -> dict:
    """Variants already finished by an earlier (possibly interrupted) run into ``out`` with the same preset config."""
    prev = None if out is None else earlier_result(out / "training_vs_sde", log)
    if not isinstance(prev, dict) or prev.get("preset_config") != to_jsonable(cfg):
        return {}
    return prev.get("variants", {})


def run(preset: str | dict, out: Path | None = None, log=print, fresh: bool = False) -> dict:
    """Run the comparison of a preset (name or dict); with ``out``, write the summary after every variant, so that
    a rerun into the same ``out`` (unless ``fresh``) reuses the variants an interrupted run finished."""
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(sorted(PRESETS))}")
    cfg = PRESETS[preset] if isinstance(preset, str) else preset
    t_start = time.perf_counter()
    done = {} if fresh else _previous(out, cfg, log)
    pname, pkw = cfg["problem"]
    # batches from a fresh uniform subset each step: the sampler the SDE models exactly (shuffled epochs make the
    # batches of one epoch dependent); a preset can ask for epochs with "uniform_subset": False
    base = train.TrainConfig(
        problem=pname,
        problem_kwargs=pkw,
        batch_size=cfg["batch_size"],
        eta=cfg["eta"],
        steps=cfg["steps"],
        every=cfg["every"],
        seeds=cfg["seeds"],
        observables=cfg["observables"],
        sampler="uniform_subset" if cfg.get("uniform_subset", True) else "without_replacement",
        **{k: v for k, v in dict(cfg.get("momentum") or {}).items() if k in ("momentum", "nesterov")},
    )
    problem = train.build_problem(base)
    sampler = train.build_sampler(base)
    result = {
        "preset": preset if isinstance(preset, str) else "custom",
        "preset_config": cfg,
        "variants": {},
        "provenance": provenance(),
    }
    for label, name, kw in cfg["variants"]:
        if label in done:
            result["variants"][label] = done[label]
            log(f"[{label}] reusing the finished comparison in {Path(out or '.') / 'training_vs_sde.json'}")
            continue
        config = base.replace(variant=name, variant_kwargs=kw, label=label)
        t0 = time.perf_counter()
        rec = train.record(config, problem=problem, save_params=True)
        t_train = time.perf_counter() - t0
        variant = train.build_variant(config)
        # with momentum beta: the rescaled-learning-rate SDE (step eta / (1 - beta), in time k eta / (1 - beta))
        momentum = train.build_momentum(config)
        model = ss.sde_model(
            problem,
            variant,
            sampler,
            eta=config.eta,
            diffusion="leading",
            order=1,
            num_samples=cfg["num_samples"],
            momentum=momentum,
        )
        t0 = time.perf_counter()
        # with momentum every SDE step is saved, so that the SDE can also be read at the warm-up-corrected time
        # of each recorded step (Momentum.elapsed_steps: the run lags by beta / (1 - beta) steps)
        every = config.every if momentum is None else 1
        paths = ss.simulate(
            model,
            t1=float(train.sde_time(config, config.steps)),
            num_paths=cfg["paths"],
            key=jr.key(10_000),
            record=ss.observables("loss", every=every),
            save_paths=True,
        )
        est = train.Estimators.of(config, variant, problem)
        readings = {"comparison": rec.steps}
        if momentum is not None:
            readings["comparison_warmup"] = np.rint(momentum.elapsed_steps(rec.steps)).astype(int)
        comps, vals = {}, {}
        for key_, at in readings.items():
            idx = np.searchsorted(paths.steps, at)
            if not np.array_equal(paths.steps[np.minimum(idx, len(paths.steps) - 1)], at) or (
                key_ == "comparison" and not np.allclose(paths.times[idx], rec.times)
            ):
                raise AssertionError("SDE and training grids differ")
            picked = jax.tree_util.tree_map(lambda a: a[:, idx], paths.paths)
            sde_vals = train.evaluate(est, config.observables, problem, picked)
            if paths.num_diverged:
                after = paths.diverged[:, None] & (at[None, :] >= paths.diverged_step[:, None])
                sde_vals = {k: np.where(after, np.nan, v) for k, v in sde_vals.items()}
            comps[key_] = {name_: compare(rec.values[name_], sde_vals[name_]) for name_ in config.observables}
            vals[key_] = sde_vals
        t_sde = time.perf_counter() - t0
        comp, sde_vals = comps["comparison"], vals["comparison"]
        t0 = time.perf_counter()
        seed0 = jax.tree_util.tree_map(lambda a: a[0], rec.saved_params)
        noise = noise_along(problem, sampler, seed0, jr.key(20_000), cfg["noise_batches"], cfg["top_k"])
        t_noise = time.perf_counter() - t0
        result["variants"][label] = {
            "config": config.to_dict(),
            "times": rec.times.tolist(),
            "steps": rec.steps.tolist(),
            **comps,
            "noise": noise,
            "num_diverged": {"train": rec.meta["num_diverged"], "sde": paths.num_diverged},
            "wall_s": {"train": t_train, "sde": t_sde, "noise": t_noise},
        }
        if out is not None:
            rec.save(out / "records" / f"train__{label.replace(' ', '_')}")
            save_result(
                out / "records" / f"sde__{label.replace(' ', '_')}",
                {"steps": rec.steps} | {f"value__{k}": v for k, v in sde_vals.items()},
                {
                    "kind": "sde_paths",
                    "config": paths.config,
                    "wall_time_s": paths.wall_time_s,
                    "provenance": provenance(),
                },
            )
        if out is not None:
            save_result(out / "training_vs_sde", None, result | {"complete": False})
        log(f"[{label}] train {t_train:.1f} s, SDE {t_sde:.1f} s, noise {t_noise:.1f} s")
        for name_, c in comp.items():
            log(
                f"  {name_:14s} final train {c['train_mean'][-1]:10.4f} ± {c['train_band95'][-1]:.4f}"
                f"  SDE {c['sde_mean'][-1]:10.4f} ± {c['sde_band95'][-1]:.4f}"
                f"  rel. gap final {c['final_relative_gap']:.3f} max {c['max_relative_gap']:.3f}  "
                f"max|z| {c['max_abs_z']:.2f}"
            )
        for name_, c in comps.get("comparison_warmup", {}).items():
            log(
                f"  {name_:14s} warm-up-corrected time: SDE {c['sde_mean'][-1]:10.4f} ± {c['sde_band95'][-1]:.4f}"
                f"  rel. gap final {c['final_relative_gap']:.3f} max {c['max_relative_gap']:.3f}  "
                f"max|z| {c['max_abs_z']:.2f}"
            )
        r = np.asarray(noise["trace_ratio_measured_over_predicted"])
        log(
            f"  noise trace measured/predicted along training: {np.array2string(r, precision=3)}"
            f"  (z: {np.array2string(np.asarray(noise['trace_z']), precision=2)})"
        )
        log(
            f"  top eig measured/predicted (final): "
            f"{np.array2string(np.asarray(noise['meas_top'][-1]) / np.asarray(noise['pred_top'][-1]), precision=3)}"
            f"  cosine {noise['cosine'][-1]:.3f} (ref {noise['cosine_ref'][-1]:.3f})"
            f"  overlap {noise['overlap'][-1]:.3f} (ref {noise['overlap_ref'][-1]:.3f})"
        )
    result["wall_time_s"] = time.perf_counter() - t_start
    result["complete"] = True
    if out is not None:
        save_result(out / "training_vs_sde", None, result)
    return result


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--jax-cache", type=Path, default=None, help="persistent JAX compilation cache folder")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="recompute every variant (by default a rerun into the same OUT reuses finished variants)",
    )
    args = ap.parse_args(argv)
    if args.jax_cache is not None:
        jax.config.update("jax_compilation_cache_dir", str(args.jax_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    args.out.mkdir(parents=True, exist_ok=True)
    res = run(args.preset, args.out, log=lambda msg: print(msg, flush=True), fresh=args.fresh)
    print(f"total {res['wall_time_s']:.1f} s -> {args.out / 'training_vs_sde.json'}")
    return res


if __name__ == "__main__":
    main()
