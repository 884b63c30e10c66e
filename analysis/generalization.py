"""Generalization under label noise (claim C11, figure F10; DESIGN §6.3 and the m-sharpness claim).

On scikit-learn's digits with a fraction ``p`` of the *training* labels replaced by random classes (the test
labels stay clean), each variant trains from the problem's initial point over several seeds (vmapped, one
jitted scan): SGD, SAM (= m-SAM at ``m = B``), m-SAM at the preset's smaller ``m``, RW-SAM at the setting chosen
by the RW-SAM study of :mod:`analysis.m_sharpness` (its ``lambda`` calibrated on each noised problem to the
same effective sample size at the initial point), F-SAM and SAM-ON. Recorded: final test accuracy and test loss
(and train loss and accuracy), per seed and as mean and standard error over seeds.

The paper's claim (m-sharpness): test accuracy does not fall as ``m`` shrinks, RW-SAM matches small-m m-SAM,
and the gains over SAM grow with the label noise. :mod:`paper_checks.generalization` states and tests it.

Run ``python -m analysis.generalization --preset quick --out DIR`` (``tiny``, ``quick``: the digits MLP;
``full``: the MLP longer, 8 seeds, and the GroupNorm CNN). Every record lands in ``DIR/records`` atomically with
its config (the label noise is in the problem kwargs), seeds, versions and device; a rerun into the same ``DIR``
reuses finished records (an interrupted run resumes). The summary is ``DIR/generalization.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from analysis import presets as _presets
from sde_sam import mean_stderr, train
from sde_sam._io import provenance, save_result

#: The setting of the RW-SAM study used here (analysis.m_sharpness, quick preset, 4 seeds: the highest mean test
#: accuracy of the twelve settings, 0.958 ± 0.008; the ascent-only reading; the four-probe score).
RW_SETTING = {"score": "4 probes", "ess": 0.5, "reading": "ascent"}

PRESETS = {
    "tiny": {
        "models": (("digits_mlp", {"hidden": 8}, {}),),
        "noise": (0.0, 0.4),
        "batch_size": 32,
        "eta": 0.1,
        "rho": 0.05,
        "steps": 20,
        "every": 10,
        "seeds": (0, 1),
        "ms": (32, 4, 1),
        "rw": RW_SETTING,
    },
    # reproduce's stage configs (analysis.presets): quick shares the training stage's model, full adds the CNN
    "quick": _presets.QUICK["generalization"],
    "full": _presets.FULL["generalization"],
}
# what a GPU settles (benchmarks/gpu_session.sh): the full preset's GroupNorm CNN at the MLP's length (3000 steps)
# and 8 seeds, where the CPU recording has 300 steps; records resume, so a session that runs out of
# time goes on where it stopped when run again
PRESETS["gpu"] = dict(
    PRESETS["full"], models=[["digits_cnn", {"norm": "group"}, {"steps": 3000, "every": 1000, "seeds": list(range(8))}]]
)

OBSERVABLES = ("loss", "accuracy", "test_loss", "test_accuracy")


def m_label(m: int, batch_size: int) -> str:
    return "SAM" if m == batch_size else f"m-SAM (m={m})"


def variant_specs(batch_size: int, rho: float, ms, rw_kwargs: dict) -> list[tuple[str, str, dict]]:
    """``(label, factory, kwargs)``: SGD, SAM (m = B), m-SAM at each smaller ``m``, RW-SAM, F-SAM, SAM-ON."""
    specs = [("SGD", "sgd", {}), ("SAM", "sam", {"rho": rho})]
    specs += [
        (m_label(m, batch_size), "m-sam", {"rho": rho, "micro_batch_size": int(m)})
        for m in sorted(ms, reverse=True)
        if m < batch_size
    ]
    specs += [
        ("RW-SAM", "rw-sam", {"rho": rho, **rw_kwargs}),
        ("F-SAM", "f-sam", {"rho": rho}),
        ("SAM-ON", "sam-on", {"rho": rho}),
    ]
    return specs


def noised(problem, problem_kwargs: dict, label_noise: float):
    """``problem`` with the training labels of ``label_noise`` (:func:`sde_sam.problems.load_digits_split`, the
    same draw as building the problem with ``label_noise=``); its loss and name are kept, so the compiled training
    programs are reused across noise levels (the record's config carries the noise level)."""
    from sde_sam.problems import load_digits_split

    train_data, _ = load_digits_split(
        problem_kwargs.get("test_fraction", 0.2), problem_kwargs.get("seed", 0), label_noise
    )
    return dataclasses.replace(problem, data=train_data)


def rw_kwargs(problem, batch_size: int, setting: dict) -> tuple[dict, dict]:
    """RW-SAM's kwargs for ``setting`` (score, target effective sample size, reading) with ``lambda`` calibrated
    on ``problem`` at its initial point (:func:`analysis.m_sharpness.temperature_for_ess`), and the calibration."""
    from analysis import m_sharpness as ms

    scores_kw = dict(ms.RW_SCORES)[setting["score"]]
    scores = ms.batch_scores(problem, scores_kw, batch_size)
    lam = ms.temperature_for_ess(scores, setting["ess"])
    kw = {"inverse_temperature": lam, "relative_scores": True, **scores_kw}
    if setting["reading"] == "weighted descent":
        kw["weights_in_descent"] = True
    return kw, dict(setting, **{"lambda": lam, "ess_at_init": ms.ess_of_temperature(scores, lam) / batch_size})


def _over_seeds(v: np.ndarray) -> dict:
    v = v[np.isfinite(v)]
    mean, stderr = mean_stderr(v)
    return {"mean": float(mean), "stderr": float(stderr), "num_seeds": len(v), "per_seed": [float(x) for x in v]}


def run_model(cfg: dict, problem_name: str, problem_kwargs: dict, out: Path, log, fresh: bool = False) -> dict:
    """Every variant at every noise level on one model; rows ``{noise: {label: {...}}}``."""
    from analysis import m_sharpness as ms

    base = train.TrainConfig(
        problem=problem_name,
        problem_kwargs=problem_kwargs,
        batch_size=cfg["batch_size"],
        eta=cfg["eta"],
        steps=cfg["steps"],
        every=cfg["every"],
        seeds=tuple(cfg["seeds"]),
        observables=OBSERVABLES,
    )
    clean = ms.shared_problem(base)
    rows, calibration = {}, {}
    for p in cfg["noise"]:
        problem = noised(clean, problem_kwargs, p) if p else clean
        rw, calibration[str(p)] = rw_kwargs(problem, cfg["batch_size"], cfg["rw"])
        log(
            f"  [{clean.name}, label noise {p:g}] RW-SAM lambda {rw['inverse_temperature']:.4g} "
            f"(ESS {100 * cfg['rw']['ess']:g}% of B at the initial point)"
        )
        level = {}
        for label, name, kw in variant_specs(cfg["batch_size"], cfg["rho"], cfg["ms"], rw):
            config = base.replace(
                problem_kwargs=dict(problem_kwargs, label_noise=float(p)), variant=name, variant_kwargs=kw, label=label
            )
            t0 = time.perf_counter()
            path = out / "records" / f"{ms._slug(clean.name)}__noise{p:g}__{ms._slug(label)}"
            rec = ms.recorded(config, path, log, fresh=fresh, problem=problem)
            level[label] = {f"{o}_final": _over_seeds(rec.kept(o)[:, -1]) for o in OBSERVABLES}
            level[label] |= {
                "num_diverged": rec.meta["num_diverged"],
                "wall_s": time.perf_counter() - t0,
                "variant_kwargs": kw,
            }
            r = level[label]
            log(
                f"    {label:16s} test acc {r['test_accuracy_final']['mean']:.4f} ± "
                f"{r['test_accuracy_final']['stderr']:.4f}  test loss {r['test_loss_final']['mean']:.4f}  "
                f"train acc {r['accuracy_final']['mean']:.4f}  ({r['wall_s']:.1f} s)"
            )
        rows[str(p)] = level
    return {"problem": clean.name, "rows": rows, "rw_calibration": calibration}


def run(cfg: dict, out: Path, log=print, fresh: bool = False) -> dict:
    """Every model of the preset; the summary (also written to ``out/generalization.json``)."""
    out = Path(out)
    t0 = time.perf_counter()
    models = {}
    for name, kwargs, overrides in cfg["models"]:
        mc = dict(cfg, **overrides)
        res = run_model(mc, name, dict(kwargs), out, log, fresh=fresh)
        res |= {
            "config": {k: mc[k] for k in ("batch_size", "eta", "rho", "steps", "every", "seeds", "ms", "noise", "rw")},
            "gpu_settles": bool(mc.get("gpu_settles", False)),
        }
        models[res["problem"]] = res
    summary = {
        "models": models,
        "batch_size": cfg["batch_size"],
        "rho": cfg["rho"],
        "noise": list(cfg["noise"]),
        "wall_s": time.perf_counter() - t0,
        "provenance": provenance(),
    }
    save_result(out / "generalization", None, summary)
    return summary


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--out", default="results/generalization")
    ap.add_argument("--fresh", action="store_true", help="retrain instead of reusing finished records")
    ap.add_argument(
        "--model", action="append", help="only this model of the preset (digits_mlp, digits_cnn; repeatable)"
    )
    a = ap.parse_args(argv)
    cfg = dict(PRESETS[a.preset])
    if a.model:
        known = [m[0] for m in cfg["models"]]
        bad = [m for m in a.model if m not in known]
        if bad:
            ap.error(f"--model {', '.join(bad)}: not in preset {a.preset!r}; valid: {', '.join(known)}")
        cfg["models"] = [m for m in cfg["models"] if m[0] in a.model]
    res = run(cfg, Path(a.out), fresh=a.fresh)
    print(f"total {res['wall_s']:.1f} s -> {Path(a.out) / 'generalization.json'}")


if __name__ == "__main__":
    main()
