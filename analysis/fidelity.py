"""Which SDE describes a discrete run, and how well: :func:`sde_sam.validate` per variant on two problems (docs/sde.md,
"Which SDE describes a run"; the verdicts: DESIGN §3.5).

The study is presets over ``ss.validate``: for each variant it makes the discrete runs, SVAG at each ``l`` of
``svag`` and every rung of the ladder (drift ``general`` / ``expected`` x diffusion ``leading`` / ``first_order`` /
``empirical`` x order 1 / 2, those the variant supports; ``rungs`` keeps a subset by label), each rung refined in
``dt`` until its gaps move by no more than their Monte Carlo error (at most ``max_refine`` halvings). Each variant's
result is the :class:`~sde_sam.Validation` (``to_dict``: per observable and recorded time the gap ± s.e. of every
model, the equivalence test and the verdict) and its error budget on the part's key observable
(:meth:`~sde_sam.Validation.budget`: each rung's gap at ``dt = eta`` and at its finest ``dt``, the difference
being the Euler-Maruyama error, beside SVAG's, the finite-learning-rate part no SDE closes). F9 draws the budget.

Problems: (a) the sharp/flat escape problem (observables: ``outside``, 1 past the problem's true barrier
:func:`sde_sam.problems.sharp_flat_barrier` and 0 inside, and the loss; key observable ``outside``); (b) training
of a built-in problem (``[name, kwargs]`` of :func:`sde_sam.train.build_problem`) with the observables named in
``observables`` (:func:`sde_sam.observables`), key observable ``key_observable``.

With ``momentum`` in a part's config (``{"beta": 0.9, "nesterov": false}``; presets ``momentum`` and
``momentum_small_step``) the discrete runs use heavy-ball (or Nesterov) momentum and every rung is the
rescaled-learning-rate model of its variant (step ``h = eta / (1 - beta)``, order 1), read at the runs' time; SVAG is
skipped (``validate``'s rules).

``python -m analysis.fidelity --preset quick --out DIR`` writes ``DIR/fidelity.json`` (config, seed, versions)
after every variant; a rerun into the same folder reuses the variants an interrupted run finished.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import jax.random as jr

import sde_sam as ss
from analysis.escape import escape_problem
from analysis.pipeline import earlier_result, git_revision
from analysis.presets import preset
from sde_sam import train
from sde_sam._io import provenance, save_result, to_jsonable


def rungs_of(variant: ss.variants.Variant, cfg: dict) -> tuple[ss.validation.Rung, ...]:
    """The ladder ``drifts x diffusions x orders`` of a part config that ``variant`` supports, each Monte Carlo
    choice with ``drift_samples`` samples; ``cfg["rungs"]`` (labels such as ``"expected/empirical/o1"``), when
    given, keeps only those."""
    k = cfg["drift_samples"]
    rungs = ss.validation.ladder(
        variant,
        drifts=[ss.sde.as_drift(d, num_samples=k) for d in cfg["drifts"]],
        diffusions=[ss.sde.as_diffusion(s, num_samples=k) for s in cfg["diffusions"]],
        orders=tuple(cfg["orders"]),
        momentum=_momentum(cfg),
    )
    keep = cfg.get("rungs")
    return rungs if keep is None else tuple(r for r in rungs if r.label in keep)


def _momentum(cfg: dict) -> ss.Momentum | None:
    """``cfg["momentum"]`` (``{"beta": ..., "nesterov": ...}``) as a :class:`~sde_sam.Momentum`; absent: none."""
    m = cfg.get("momentum")
    return None if not m else ss.Momentum(**m)


def _study(
    problem,
    sampler,
    cfg: dict,
    record: ss.Record,
    key_observable: str,
    part: str,
    log,
    done,
    on_variant,
    extra=lambda variant: {},
) -> dict:
    """``ss.validate`` of every variant of a part config: ``{"variants": {label: result}}``, each result the
    validation's dict with its ``budget`` on ``key_observable``. ``done``: variants finished earlier (label ->
    result), reused as they are; ``on_variant(result)`` is called after each new one (the CLI saves there)."""
    result = {
        "problem": problem.name,
        "sampler": type(sampler).__name__,
        "key_observable": key_observable,
        "variants": {},
    }
    for i, (label, name, kw) in enumerate(cfg["variants"]):
        if done and label in done:  # each variant's key depends on its index and the seed: reused = recomputed
            result["variants"][label] = done[label]
            log(f"  {label}: reusing the result of an earlier run with the same config")
            continue
        variant = ss.variants.get(name, **kw)
        log(f"  [{part}] {label}")
        v = ss.validate(
            problem,
            variant,
            sampler,
            eta=cfg["eta"],
            steps=cfg["steps"],
            num_runs=cfg["num_runs"],
            num_paths=cfg["num_paths"],
            key=jr.key(cfg["seed"] * 1000 + i),
            record=record,
            rungs=rungs_of(variant, cfg),
            svag=tuple(lv for lv in cfg["svag"] if lv > 1),
            max_refine=cfg["max_refine"],
            momentum=_momentum(cfg),
            progress=False,
            log=lambda s: log(f"    {s}"),
        )
        result["variants"][label] = v.to_dict() | {"budget": v.budget(key_observable)} | extra(variant)
        if on_variant is not None:
            on_variant(result)
    return result


def escape(cfg: dict, log=print, done=None, on_variant=None) -> dict:
    """The study on the sharp/flat escape problem: fraction outside the sharp basin (true barrier) and loss."""
    problem, barrier, outside = escape_problem(
        n=cfg["n"], sharp_curvature=cfg["sharp_curvature"], noise_scale=cfg["noise_scale"], seed=cfg["seed"]
    )
    record = ss.observables("loss", every=cfg["every"], outside=outside)
    out = _study(
        problem,
        ss.UniformSubset(cfg["batch_size"]),
        cfg,
        record,
        "outside",
        "escape",
        log,
        done,
        on_variant,
        extra=lambda variant: {"m": variant.rule.ascent_batch_size(cfg["batch_size"], cfg["n"])},
    )
    return out | {"barrier": barrier}


def training(cfg: dict, log=print, done=None, on_variant=None) -> dict:
    """The study on training: every observable in ``cfg["observables"]`` on both sides."""
    pname, pkw = cfg["problem"]
    problem = train.build_problem(train.TrainConfig(problem=pname, problem_kwargs=pkw))
    record = ss.observables(*cfg["observables"], every=cfg["every"])
    return _study(
        problem,
        ss.UniformSubset(cfg["batch_size"]),
        cfg,
        record,
        cfg["key_observable"],
        "training",
        log,
        done,
        on_variant,
    )


# -- the study ----------------------------------------------------------------------------------------------------

PRESETS = {
    "tiny": {
        "escape": {
            "seed": 0,
            "n": 16,
            "sharp_curvature": 16.0,
            "noise_scale": 0.2,
            "batch_size": 8,
            "eta": 0.05,
            "steps": 20,
            "every": 10,
            "num_runs": 16,
            "num_paths": 16,
            "drift_samples": 4,
            "variants": [["m-SAM (m=1)", "m-sam", {"rho": 0.1, "micro_batch_size": 1}]],
            "drifts": ["general", "expected"],
            "diffusions": ["leading"],
            "orders": [1],
            "svag": [2],
            "max_refine": 1,
        },
        "training": {
            "seed": 0,
            "problem": ["digits_mlp", {"hidden": 4}],
            "batch_size": 16,
            "eta": 0.1,
            "steps": 4,
            "every": 2,
            "num_runs": 3,
            "num_paths": 3,
            "drift_samples": 2,
            "key_observable": "loss",
            "observables": ["loss", "trace_sigma"],
            "variants": [["SAM", "sam", {"rho": 0.05}]],
            "drifts": ["expected"],
            "diffusions": ["leading"],
            "orders": [1],
            "svag": [],
            "max_refine": 0,
        },
    },
    # the full preset's training problem and SDE step under heavy-ball momentum 0.9: eta = 0.01, so the rescaled
    # step eta / (1 - beta) = 0.1 and the horizon t = 20 equal the full preset's (a ladder with and without momentum)
    "momentum": {
        "escape": None,
        "training": {
            "seed": 0,
            "problem": ["digits_mlp", {"hidden": 16}],
            "batch_size": 64,
            "eta": 0.01,
            "momentum": {"beta": 0.9, "nesterov": False},
            "steps": 200,
            "every": 50,
            "num_runs": 16,
            "num_paths": 16,
            "drift_samples": 8,
            "key_observable": "loss",
            "observables": ["loss", "accuracy", "trace_sigma", "lambda_max"],
            "variants": [
                ["SGD", "sgd", {}],
                ["SAM", "sam", {"rho": 0.05}],
                ["m-SAM (m=4)", "m-sam", {"rho": 0.05, "micro_batch_size": 4}],
            ],
            "drifts": ["general", "expected"],
            "diffusions": ["leading", "empirical"],
            "orders": [1],
            "svag": [],
            "max_refine": 1,
        },
    },
    # the same problem inside the rescaled model's validity, eta lambda_max / (1 - beta)^2 << 1 (measured about 0.04
    # here against about 14 above): SGD with momentum 0.9 at eta = 1e-4 (rescaled step 1e-3), 2000 steps to t = 2
    "momentum_small_step": {
        "escape": None,
        "training": {
            "seed": 0,
            "problem": ["digits_mlp", {"hidden": 16}],
            "batch_size": 64,
            "eta": 1e-4,
            "momentum": {"beta": 0.9, "nesterov": False},
            "steps": 2000,
            "every": 500,
            "num_runs": 16,
            "num_paths": 16,
            "drift_samples": 8,
            "key_observable": "loss",
            "observables": ["loss", "accuracy", "trace_sigma", "lambda_max"],
            "variants": [["SGD", "sgd", {}]],
            "drifts": ["general"],
            "diffusions": ["leading"],
            "orders": [1],
            "svag": [],
            "max_refine": 0,
        },
    },
    "quick": preset("quick")["fidelity"],
    "full": preset("full")["fidelity"],
}

PARTS = (("escape", escape, "escape problem"), ("training", training, "training"))


def run(cfg: dict, log=print, previous: dict | None = None, checkpoint=None) -> dict:
    """Both parts of the study for a config dict (``PRESETS[name]``). ``previous``: part -> finished variants of an
    interrupted run of the same config (reused); ``checkpoint(partial)`` is called after every new variant."""
    t0 = time.perf_counter()
    out: dict[str, Any] = {"config": cfg}
    previous = previous or {}
    for part, fn, title in PARTS:
        if not cfg.get(part):
            continue
        log(f"fidelity: {title}")

        def save(result, part=part):
            if checkpoint is not None:
                checkpoint(out | {part: result, "wall_s": time.perf_counter() - t0})

        out[part] = fn(cfg[part], log, done=previous.get(part), on_variant=save)
    out["wall_s"] = time.perf_counter() - t0
    return out


def tables(result: dict) -> str:
    """Per part and variant: the validation's table (verdicts; each model's largest gap) and the error budget of
    the key observable (markdown)."""
    lines = []
    for part, _, _ in PARTS:
        if not result.get(part):
            continue
        key = result[part]["key_observable"]
        for label, res in result[part]["variants"].items():
            unit = "h" if res["config"].get("momentum") else "eta"  # with momentum the SDE step is eta / (1 - beta)
            v = ss.Validation.from_dict(res)
            lines += [
                f"\n**{part}: {label}**\n",
                str(v),
                "",
                f"Error budget of {key} (at its largest gap over the recorded times; EM: the gap that halving dt "
                "removed):",
                "",
                f"| model | finest dt | gap ± s.e. | gap at dt = {unit} | EM part | agreement |",
                "|---|---|---|---|---|---|",
            ]
            for r in res["budget"]:
                at_eta = "" if r["gap_at_h"] is None else f"{r['gap_at_h']:+.4f}"
                em = "" if r["euler_maruyama"] is None else f"{r['euler_maruyama']:+.4f}"
                dt = f"{'eta' if r['model'].startswith('SVAG') else unit}/{r['refine']}"
                lines.append(
                    f"| {r['model']} | {dt} | {r['gap']:+.4f} ± {r['stderr']:.4f} | {at_eta} | {em} | "
                    f"{r['agreement']} |"
                )
    return "\n".join(lines)


def _previous(path: Path, cfg: dict, log) -> dict:
    """Part -> finished variants stored at ``path`` by an earlier run of the same config (else nothing)."""
    prev = earlier_result(path, log)
    if not isinstance(prev, dict) or prev.get("config") != to_jsonable(cfg):
        return {}
    return {part: prev[part]["variants"] for part, _, _ in PARTS if isinstance(prev.get(part), dict)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="study size (default: quick)")
    ap.add_argument(
        "--out", type=Path, required=True, help="folder for fidelity.json (fidelity-<part>.json with --part)"
    )
    ap.add_argument(
        "--part",
        choices=("escape", "training", "both"),
        default="both",
        help="which problem of the study to run (default: both)",
    )
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="recompute every variant (default: reuse those an interrupted run into OUT finished)",
    )
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = dict(PRESETS[args.preset])
    if args.part != "both":
        cfg[{"escape": "training", "training": "escape"}[args.part]] = None
    name = "fidelity" if args.part == "both" else f"fidelity-{args.part}"
    path = args.out / name
    log = lambda s: print(s, flush=True)  # noqa: E731
    previous = {} if args.fresh else _previous(path, cfg, log)
    command = f"python -m analysis.fidelity --preset {args.preset} --part {args.part} --out DIR"
    meta = {
        "preset": args.preset,
        "part": args.part,
        "command": command,
        "revision": git_revision(),
        "seeds": "config 'seed' (variant i: key seed * 1000 + i)",
        "provenance": provenance(),
    }
    res = run(
        cfg,
        log=log,
        previous=previous,
        checkpoint=lambda partial: save_result(path, None, meta | partial | {"complete": False}),
    )
    save_result(path, None, meta | res | {"complete": True})
    print(tables(res))
    print(f"total {res['wall_s']:.1f} s -> {args.out / (name + '.json')}")
    return res


if __name__ == "__main__":
    main()
