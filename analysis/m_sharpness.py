"""m-sharpness on the digits networks (DESIGN §6.3, §8 F2/F6/F8 and the m-sharpness claims).

For SGD, SAM, n-SAM, m-SAM (m in {B, 32, 16, 8, 4, 1}), RW-SAM (weights in the ascent only, and weights also
in the descent), F-SAM and SAM-ON, trained from one initial point over several seeds at once:

1. ``tr Sigma`` along training and at its end (the paper's Table 6 ordering SGD > SAM > RW-SAM, RW-SAM close
   to small-m m-SAM; the paper's values SGD 572.39 / SAM 198.40 / RW-SAM 177.79 are quoted as the reference:
   ours are measured on our problems, so only the ordering is comparable);
2. escape from a sharp region: start at a sharp minimum (reached by large-batch gradient descent with a learning
   rate below the one of the compared runs, so its sharpness exceeds what they tolerate; optionally on label-noised
   data) and follow ``lambda_max`` and ``tr Sigma`` for m-SAM with several m: the claim is that
   smaller m leaves sooner;
3. wall time per step of every variant (seeds vmapped; median of repeats after compilation).

Run ``python -m analysis.m_sharpness --preset quick --out DIR`` (``quick``: the digits MLP; ``full``: also the
GroupNorm CNN and a BatchNorm CNN for the SAM-ON rows). A preset's ``problems`` are ``(name, kwargs)`` or
``(name, kwargs, overrides)``: the overrides replace preset entries for that problem (``escape=False`` skips
its escape experiment); ``bn_cnn`` is ``False`` or a dict of overrides for the BatchNorm rows. Results go to
``DIR/m_sharpness.json`` (summary) and ``DIR/records/*.json|npz`` (every recorded trajectory with config, seeds,
versions, device, wall time); a rerun into the same ``DIR`` reuses the records of the same config (``--fresh``
retrains).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from analysis.pipeline import earlier_result
from sde_sam import mean_stderr, train
from sde_sam._io import provenance, result_paths, save_result, to_jsonable

PAPER_REFERENCE = {"SGD": 572.39, "SAM": 198.40, "RW-SAM": 177.79}

PRESETS = {
    "tiny": {
        "problems": (("digits_mlp", {"hidden": 8}),),
        "batch_size": 32,
        "eta": 0.1,
        "rho": 0.05,
        "steps": 20,
        "every": 10,
        "seeds": (0, 1),
        "ms": (32, 8, 1),
        "escape_ms": (32, 1),
        "pre_batch": 256,
        "pre_steps": 20,
        "pre_eta": 0.05,
        "escape_steps": 20,
        "escape_every": 10,
        "label_noise": 0.0,
        "timing_repeats": 1,
        "bn_cnn": False,
    },
    "quick": {
        "problems": (("digits_mlp", {"hidden": 32}),),
        "batch_size": 64,
        "eta": 0.1,
        "rho": 0.05,
        "steps": 300,
        "every": 100,
        "seeds": (0, 1, 2, 3),
        "ms": (64, 32, 16, 8, 4, 1),
        "escape_ms": (64, 8, 1),
        "pre_batch": 1024,
        "pre_steps": 400,
        "pre_eta": 0.05,
        "escape_steps": 200,
        "escape_every": 50,
        "label_noise": 0.0,
        "timing_repeats": 1,
        "bn_cnn": False,
        "rw_ess": (0.5, 0.1),
    },
    # The GroupNorm CNN is ~20x slower per step than the MLP on CPU (m = 1 ~300x: one convolution per example),
    # so it trains for fewer steps and seeds, with RW-SAM at lambda = 1 only, no timing rerun and no escape run.
    "full": {
        "problems": (
            ("digits_mlp", {"hidden": 64}),
            (
                "digits_cnn",
                {"norm": "group"},
                {
                    "steps": 400,
                    "every": 100,
                    "seeds": (0, 1, 2, 3),
                    "rw_temperatures": (1.0,),
                    "timing_repeats": 0,
                    "escape": False,
                    "rw_ess": (),
                },
            ),
        ),
        "batch_size": 64,
        "eta": 0.1,
        "rho": 0.05,
        "steps": 3000,
        "every": 250,
        "seeds": tuple(range(8)),
        "ms": (64, 32, 16, 8, 4, 1),
        "escape_ms": (64, 16, 4, 1),
        "pre_batch": 1024,
        "pre_steps": 3000,
        "pre_eta": 0.025,
        "escape_steps": 1000,
        "escape_every": 100,
        "label_noise": 0.2,
        "timing_repeats": 1,
        "rw_temperatures": (0.1, 0.3, 1.0, 3.0),
        "rw_ess": (0.5, 0.1),
        "bn_cnn": {"steps": 400, "every": 100, "seeds": (0, 1, 2, 3)},
    },
}


def variant_specs(batch_size: int, rho: float, ms, rw_temperatures=(1.0,)) -> list[tuple[str, str, dict]]:
    """``(label, factory name, kwargs)`` for every compared variant (RW-SAM at each inverse temperature; the
    default ``lambda = 1`` keeps the plain labels)."""
    specs = [("SGD", "sgd", {}), ("SAM", "sam", {"rho": rho}), ("n-SAM", "n-sam", {"rho": rho})]
    for m in ms:
        specs.append((f"m-SAM (m={'B' if m == batch_size else m})", "m-sam", {"rho": rho, "micro_batch_size": m}))
    for lam in rw_temperatures:
        tag = "" if lam == 1.0 else f", lambda={lam:g}"
        specs += [
            (f"RW-SAM{' (' + tag[2:] + ')' if tag else ''}", "rw-sam", {"rho": rho, "inverse_temperature": lam}),
            (
                f"RW-SAM (weighted descent{tag})",
                "rw-sam",
                {"rho": rho, "weights_in_descent": True, "inverse_temperature": lam},
            ),
        ]
    specs += [
        ("F-SAM", "f-sam", {"rho": rho}),
        ("SAM-ON", "sam-on", {"rho": rho}),
    ]
    return specs


#: RW-SAM scores of the study (DESIGN §2; issue: the score must measure what it claims): the exact ``||g_i||``,
#: the paper's one-probe finite difference, and its mean over 4 Rademacher probes.
RW_SCORES = (("exact", {"score": "exact"}), ("1 probe", {"num_probes": 1}), ("4 probes", {"num_probes": 4}))


def ess_of_temperature(scores: np.ndarray, lam: float) -> float:
    """Mean over batches (rows of ``scores``) of Kish's ``1 / sum_i p_i^2`` with ``p = softmax(lam * s)``."""
    z = lam * (scores - scores.max(axis=1, keepdims=True))
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    return float(np.mean(1.0 / np.sum(p * p, axis=1)))


def temperature_for_ess(scores: np.ndarray, fraction: float, *, iters: int = 80) -> float:
    """The ``lambda >= 0`` at which the mean effective sample size over the batches of ``scores`` is
    ``fraction * B`` (bisection on ``log lambda``; the Gibbs weights' ESS falls monotonically with ``lambda``)."""
    B = scores.shape[1]
    if not 1.0 / B < fraction <= 1.0:
        raise ValueError(f"`fraction` must be in (1/B, 1] = ({1 / B:.3g}, 1], got {fraction!r}")
    target = fraction * B
    lo, hi = 1e-6, 1.0
    while ess_of_temperature(scores, hi) > target:
        hi *= 4.0
        if hi > 1e12:
            raise ValueError(
                f"no lambda reaches an effective sample size of {target:.3g}: the scores are (nearly) equal"
            )
    for _ in range(iters):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if ess_of_temperature(scores, mid) > target else (lo, mid)
    return math.sqrt(lo * hi)


def batch_scores(problem, rule_kwargs: dict, batch_size: int, *, num_batches: int = 64, seed: int = 0) -> np.ndarray:
    """``(num_batches, B)`` RW-SAM scores at the problem's initial point on batches drawn without replacement,
    divided by their batch mean (the relative reading, which the study uses), one probe key per batch."""
    import jax
    import jax.numpy as jnp
    import jax.random as jr

    from sde_sam import variants

    rule: Any = variants.rw_sam(0.05, relative_scores=True, **rule_kwargs).rule  # an RWRule: it has scores
    x, n = problem.init_params, problem.num_examples

    def one(key):
        kb, kp = jr.split(key)
        batch = problem.take(jr.choice(kb, n, (batch_size,), replace=False))
        s = rule.scores(problem, x, batch, problem.example_losses(x, batch), kp)
        return s / jnp.mean(s)

    return np.asarray(jax.jit(jax.vmap(one))(jr.split(jr.key(seed), num_batches)), np.float64)


def rw_study_specs(problem, batch_size: int, rho: float, ess_fractions, log) -> tuple[list, dict]:
    """The RW-SAM study's ``(label, factory, kwargs)`` rows and their calibration: for each score of
    :data:`RW_SCORES` and each target ``ess_fractions`` (of ``B``), the ``lambda`` giving that mean effective
    sample size at the initial point (relative scores), in both readings (weights in the ascent only; also in the
    descent)."""
    specs, calib = [], {}
    for score_label, kw in RW_SCORES:
        scores = batch_scores(problem, kw, batch_size)
        for frac in ess_fractions:
            lam = temperature_for_ess(scores, frac)
            for reading, extra in (("ascent", {}), ("weighted descent", {"weights_in_descent": True})):
                label = f"RW-SAM [{score_label}, ESS {100 * frac:g}%, {reading}]"
                specs.append(
                    (label, "rw-sam", {"rho": rho, "inverse_temperature": lam, "relative_scores": True, **kw, **extra})
                )
                calib[label] = {
                    "score": score_label,
                    "ess_target": frac,
                    "reading": reading,
                    "lambda": lam,
                    "ess_at_init": ess_of_temperature(scores, lam) / batch_size,
                }
            log(f"  RW-SAM {score_label}: lambda {lam:.4g} gives ESS {100 * frac:g}% of B at the initial point")
    return specs, calib


@functools.lru_cache(maxsize=16)
def _shared(problem: str, kwargs_json: str):
    return train.build_problem(train.TrainConfig(problem=problem, problem_kwargs=json.loads(kwargs_json)))


def shared_problem(config: train.TrainConfig):
    """The problem of ``config``, one object per (name, kwargs) in this process: jitted programs are keyed on
    the problem's loss function, so the analyses that train the same model (the training and generalization
    stages of ``reproduce``) reuse each other's compilations."""
    return _shared(config.problem, json.dumps(to_jsonable(dict(config.problem_kwargs)), sort_keys=True))


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label).strip("_").lower()


def recorded(config: train.TrainConfig, path: Path, log, *, start=None, fresh: bool = False, **record_kw):
    """The record of ``config`` at ``path``: loaded when a previous (possibly interrupted) run already wrote it for
    the same config and starting point ``start`` (a JSON-able description), else trained and saved atomically."""
    start = to_jsonable(start)
    errors = (OSError, ValueError, KeyError)
    rec = None if fresh else earlier_result(path, log, load=train.TrainRecord.load, errors=errors, what="record")
    if rec is not None and rec.config == config and rec.meta.get("start") == start:
        log(f"  {config.label or config.variant}: reusing {result_paths(path)[0]}")
        return rec
    rec = train.record(config, **record_kw)
    rec.meta["start"] = start
    rec.save(path)
    return rec


def _over_seeds(per_seed: np.ndarray) -> dict:
    """Mean and standard error over seeds of one value per seed."""
    mean, stderr = mean_stderr(per_seed)  # one seed: no standard error (NaN)
    return {"mean": float(mean), "stderr": float(stderr), "num_seeds": len(per_seed)}


def _final(rec: train.TrainRecord, name: str) -> dict:
    return _over_seeds(rec.kept(name)[:, -1])


def _area(rec: train.TrainRecord, name: str) -> dict:
    """The time average of ``name`` over the recorded steps after the start (the area under its curve divided by
    the horizon), per seed, then its mean and standard error over seeds: smaller = fell faster."""
    return _over_seeds(rec.kept(name)[:, 1:].mean(axis=1))


def trace_sigma_table(
    cfg: dict, problem_name: str, problem_kwargs: dict, out: Path, log, specs=None, fresh: bool = False
) -> dict:
    """Train every variant; ``tr Sigma`` (and loss, test accuracy) over training; time per step. Records already
    in ``out/records`` for the same config are reused unless ``fresh``."""
    base = train.TrainConfig(
        problem=problem_name,
        problem_kwargs=problem_kwargs,
        batch_size=cfg["batch_size"],
        eta=cfg["eta"],
        steps=cfg["steps"],
        every=cfg["every"],
        seeds=cfg["seeds"],
        observables=("loss", "accuracy", "test_loss", "test_accuracy", "trace_sigma", "effective_sample_size"),
    )
    problem = shared_problem(base)
    rows, settings = {}, {}
    if specs is None:
        specs = variant_specs(cfg["batch_size"], cfg["rho"], cfg["ms"], cfg.get("rw_temperatures", (1.0,)))
        if cfg.get("rw_ess"):
            study, settings = rw_study_specs(problem, cfg["batch_size"], cfg["rho"], cfg["rw_ess"], log)
            specs = specs + study
    for label, name, kw in specs:
        config = base.replace(variant=name, variant_kwargs=kw, label=label)
        t0 = time.perf_counter()
        rec = recorded(
            config,
            out / "records" / f"{_slug(problem.name)}__{_slug(label)}",
            log,
            fresh=fresh,
            problem=problem,
            timing_repeats=cfg["timing_repeats"],
        )
        rows[label] = {
            "trace_sigma_final": _final(rec, "trace_sigma"),
            "trace_sigma_area": _area(rec, "trace_sigma"),
            "loss_final": _final(rec, "loss"),
            "test_accuracy_final": _final(rec, "test_accuracy"),
            "test_loss_final": _final(rec, "test_loss"),
            "ess_fraction_final": _over_seeds(rec.kept("effective_sample_size")[:, -1] / cfg["batch_size"]),
            **({"rw_setting": settings[label]} if label in settings else {}),
            "trace_sigma_mean_curve": rec.mean("trace_sigma").tolist(),
            "steps": rec.steps.tolist(),
            "time_per_step_s": rec.meta["time_per_step_s"],
            "num_diverged": rec.meta["num_diverged"],
            "wall_s": time.perf_counter() - t0,
        }
        r = rows[label]
        log(
            f"  {label:28s} tr Sigma {r['trace_sigma_final']['mean']:9.3f} ± {r['trace_sigma_final']['stderr']:7.3f}"
            f"  loss {r['loss_final']['mean']:.4f}  test acc {r['test_accuracy_final']['mean']:.4f}"
            f"  {1e3 * (r['time_per_step_s'] or float('nan')):7.3f} ms/step  ({r['wall_s']:.1f} s)"
        )
    return rows


def orderings(rows: dict, batch_size: int) -> dict:
    """The paper's claims as measured booleans (means of the final ``tr Sigma``) and the cost ratios."""
    ts = {k: v["trace_sigma_final"]["mean"] for k, v in rows.items()}
    small_m = [k for k in ts if k.startswith("m-SAM (m=") and k not in ("m-SAM (m=B)",)]
    m_of = {k: int(k.split("=")[1].rstrip(")")) for k in small_m}
    smallest = min(small_m, key=lambda k: m_of[k]) if small_m else None
    res = {
        "SGD > SAM": bool(ts["SGD"] > ts["SAM"]),
        "SAM > RW-SAM": bool(ts["SAM"] > ts["RW-SAM"]),
        "SAM > RW-SAM (weighted descent)": bool(ts["SAM"] > ts["RW-SAM (weighted descent)"]),
        "m-SAM tr Sigma by m (B first)": {
            k: ts[k] for k in sorted([k for k in ts if k.startswith("m-SAM")], key=lambda k: -m_of.get(k, 10**9))
        },
    }
    ms_sorted = sorted(small_m, key=lambda k: -m_of[k])
    seq = [ts["m-SAM (m=B)"]] + [ts[k] for k in ms_sorted] if "m-SAM (m=B)" in ts else [ts[k] for k in ms_sorted]
    res["m-SAM tr Sigma non-increasing as m shrinks"] = bool(all(a >= b for a, b in itertools.pairwise(seq)))
    if smallest:
        for rw in ("RW-SAM", "RW-SAM (weighted descent)"):
            # which m-SAM is RW-SAM closest to (in tr Sigma)?
            closest = min([k for k in ts if k.startswith("m-SAM")], key=lambda k: abs(ts[k] - ts[rw]))
            res[f"{rw}: closest m-SAM"] = closest
    t = {k: v["time_per_step_s"] for k, v in rows.items() if v["time_per_step_s"]}
    if "SAM" in t and "SGD" in t:
        res["time_ratio_vs_SAM"] = {k: v / t["SAM"] for k, v in t.items()}
        res["time_ratio_vs_SGD"] = {k: v / t["SGD"] for k, v in t.items()}
    return res


def escape(cfg: dict, problem_name: str, problem_kwargs: dict, out: Path, log, fresh: bool = False) -> dict:
    """Start at a sharp minimum (large-batch GD, label noise if the preset asks) and follow lambda_max, tr Sigma."""
    pkw = dict(problem_kwargs) | ({"label_noise": cfg["label_noise"]} if cfg["label_noise"] else {})
    pre = train.TrainConfig(
        problem=problem_name,
        problem_kwargs=pkw,
        variant="sgd",
        batch_size=cfg["pre_batch"],
        eta=cfg["pre_eta"],
        steps=cfg["pre_steps"],
        every=cfg["pre_steps"],
        seeds=(0,),
        observables=("loss",),
        label="sharp start",
    )
    problem = train.build_problem(pre)
    pre = pre.replace(batch_size=min(cfg["pre_batch"], problem.num_examples))
    pre_rec = train.record(pre, problem=problem, keep_params=True)
    import jax

    start = jax.tree_util.tree_map(lambda a: a[0], pre_rec.final_params)
    log(
        f"  sharp start: large-batch GD (B={pre.batch_size}, eta={pre.eta}, {pre.steps} steps"
        f"{', label noise ' + str(cfg['label_noise']) if cfg['label_noise'] else ''}): "
        f"loss {pre_rec.values['loss'][0, -1]:.4f}"
    )
    base = train.TrainConfig(
        problem=problem_name,
        problem_kwargs=pkw,
        batch_size=cfg["batch_size"],
        eta=cfg["eta"],
        steps=cfg["escape_steps"],
        every=cfg["escape_every"],
        seeds=cfg["seeds"],
        observables=("loss", "lambda_max", "trace_sigma"),
    )
    specs = (
        [("SGD", "sgd", {})]
        + [
            (f"m-SAM (m={'B' if m == cfg['batch_size'] else m})", "m-sam", {"rho": cfg["rho"], "micro_batch_size": m})
            for m in cfg["escape_ms"]
        ]
        + [("n-SAM", "n-sam", {"rho": cfg["rho"]})]
    )
    rows = {}
    for label, name, kw in specs:
        rec = recorded(
            base.replace(variant=name, variant_kwargs=kw, label=label),
            out / "records" / f"escape__{_slug(problem.name)}__{_slug(label)}",
            log,
            start={"sharp_start": pre.to_dict()},
            fresh=fresh,
            problem=problem,
            init_params=start,
        )
        lam = rec.mean("lambda_max")
        ts = rec.mean("trace_sigma")
        rows[label] = {
            "steps": rec.steps.tolist(),
            "lambda_max_mean": lam.tolist(),
            "lambda_max_stderr": rec.stderr("lambda_max").tolist(),
            "trace_sigma_mean": ts.tolist(),
            "lambda_max_drop": float(1 - lam[-1] / lam[0]),
            "trace_sigma_drop": float(1 - ts[-1] / ts[0]),
            "loss_final": float(rec.mean("loss")[-1]),
        }
        log(
            f"  {label:16s} lambda_max {lam[0]:8.3f} -> {lam[-1]:8.3f} (drop {rows[label]['lambda_max_drop']:+.3f})"
            f"   tr Sigma {ts[0]:8.3f} -> {ts[-1]:8.3f}"
        )
    m_rows = [k for k in rows if k.startswith("m-SAM")]
    drops = [rows[k]["lambda_max_drop"] for k in m_rows]  # m decreasing along the list
    return {
        "start": {"config": pre.to_dict(), "loss": float(pre_rec.values["loss"][0, -1])},
        "rows": rows,
        "smaller_m_drops_lambda_max_more": bool(all(a <= b for a, b in itertools.pairwise(drops))),
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--skip-escape", action="store_true")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="retrain everything (by default records already in OUT/records for the same config are reused,"
        " so an interrupted run resumes)",
    )
    ap.add_argument(
        "--jax-cache",
        type=Path,
        default=None,
        help="persistent JAX compilation cache folder (compiles dominate the quick preset on CPU)",
    )
    args = ap.parse_args(argv)
    if args.jax_cache is not None:
        import jax

        jax.config.update("jax_compilation_cache_dir", str(args.jax_cache))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    cfg = PRESETS[args.preset]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def log(msg):
        print(msg, flush=True)

    summary = {
        "preset": args.preset,
        "preset_config": cfg,
        "paper_reference_trace_sigma": PAPER_REFERENCE,
        "provenance": provenance(),
        "problems": {},
    }
    for entry_ in cfg["problems"]:
        problem_name, pkw = entry_[0], entry_[1]
        pcfg = cfg | (entry_[2] if len(entry_) > 2 else {})
        log(
            f"[{problem_name} {pkw}] tr Sigma at the end of training (mean ± stderr over {len(pcfg['seeds'])} seeds,"
            f" {pcfg['steps']} steps)"
        )
        rows = trace_sigma_table(pcfg, problem_name, pkw, out, log, fresh=args.fresh)
        entry = {
            "config": {k: pcfg[k] for k in ("steps", "every", "seeds", "timing_repeats")},
            "trace_sigma": rows,
            "claims": orderings(rows, pcfg["batch_size"]),
        }
        log("  claims: " + json.dumps({k: v for k, v in entry["claims"].items() if isinstance(v, (bool, str))}))
        if not args.skip_escape and pcfg.get("escape", True):
            log(f"[{problem_name}] escape from a sharp minimum")
            entry["escape"] = escape(pcfg, problem_name, pkw, out, log, fresh=args.fresh)
        summary["problems"][problem_name] = entry
    if cfg["bn_cnn"]:
        bcfg = cfg | (cfg["bn_cnn"] if isinstance(cfg["bn_cnn"], dict) else {})
        log(
            "[digits_cnn BatchNorm] SAM-ON rows (tr Sigma by the mini-batch estimator; "
            "BatchNorm has no per-example loss)"
        )
        rows = {}
        base = train.TrainConfig(
            problem="digits_cnn",
            problem_kwargs={"norm": "batch"},
            batch_size=bcfg["batch_size"],
            eta=bcfg["eta"],
            steps=bcfg["steps"],
            every=bcfg["every"],
            seeds=bcfg["seeds"],
            observables=("loss", "test_accuracy", "trace_sigma"),
        )
        problem = train.build_problem(base)
        for label, name, kw in [
            ("SGD", "sgd", {}),
            ("SAM", "sam", {"rho": bcfg["rho"]}),
            ("SAM-ON", "sam-on", {"rho": bcfg["rho"]}),
        ]:
            rec = recorded(
                base.replace(variant=name, variant_kwargs=kw, label=label),
                out / "records" / f"bn__{_slug(label)}",
                log,
                fresh=args.fresh,
                problem=problem,
            )
            rows[label] = {
                "trace_sigma_final": _final(rec, "trace_sigma"),
                "loss_final": _final(rec, "loss"),
                "test_accuracy_final": _final(rec, "test_accuracy"),
            }
            log(
                f"  {label:8s} tr Sigma {rows[label]['trace_sigma_final']['mean']:9.3f}"
                f"  test acc {rows[label]['test_accuracy_final']['mean']:.4f}"
            )
        summary["batchnorm_cnn"] = rows
    summary["wall_time_s"] = time.perf_counter() - t0
    save_result(out / "m_sharpness", None, summary)
    log(f"total {summary['wall_time_s']:.1f} s -> {out / 'm_sharpness.json'}")
    return summary


if __name__ == "__main__":
    main()
