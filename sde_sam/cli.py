"""The ``sde-sam`` command line (also ``python -m sde_sam``).

``simulate`` and ``train`` run one SDE simulation or one recorded training; ``validate`` asks whether an SDE
describes a variant on a built-in problem (:func:`sde_sam.validate`); ``demo`` trains every variant on the
digits MLP. Installed packages add commands through the ``sde_sam.commands`` entry-point group (a callable that
takes the subparsers object): the project's ``analysis.cli`` adds ``reproduce``, ``check`` and ``figures``, so the
library itself never imports the reproduction pipeline.
"""

from __future__ import annotations

import argparse
import sys

from ._cli_support import HelpFormatter, check_output, positive_int, run, seeds


def variant_options(args, default_m: int) -> dict:
    """The variant's keyword arguments from ``--rho`` and ``--m``, read off its factory's signature; an option the
    variant does not take is refused (``--rho`` for SGD, ``--m`` for a variant without micro-batches) rather than
    ignored. ``default_m`` where the factory requires a micro-batch size and ``--m`` is absent."""
    import inspect

    from ._variants._variant import _FACTORIES, get

    name = str(args.variant).lower().replace("_", "-")
    if name not in _FACTORIES:
        get(name)  # the registry's error: the unknown name and the valid ones
    params = inspect.signature(_FACTORIES[name]).parameters
    if "rho" not in params and args.rho is not None:
        raise ValueError(f"--rho does not apply to {name} (no perturbation)")
    m = params.get("micro_batch_size")
    if m is None and args.m is not None:
        with_m = ", ".join(k for k, f in _FACTORIES.items() if "micro_batch_size" in inspect.signature(f).parameters)
        raise ValueError(f"--m applies to the variants with micro-batches ({with_m}), not to {args.variant}")
    kw = {"rho": 0.05 if args.rho is None else args.rho} if "rho" in params else {}
    if m is not None and (args.m is not None or m.default is inspect.Parameter.empty):
        kw["micro_batch_size"] = default_m if args.m is None else args.m
    return kw


def add_variant_options(parser: argparse.ArgumentParser, default_m: int) -> None:
    """``--variant``, ``--rho`` and ``--m`` (read by :func:`variant_options`)."""
    parser.add_argument(
        "--variant", default="sam", help="variant name (sgd, usam, sam, m-sam, n-sam, f-sam, rw-sam, ...)"
    )
    parser.add_argument("--rho", type=float, default=None, help="perturbation radius (default: 0.05; not for sgd)")
    parser.add_argument(
        "--m",
        "--micro-batch-size",
        dest="m",
        type=positive_int,
        default=None,
        help=f"micro-batch size (m-sam, m-usam: default {default_m}; asam: its micro-batches when given)",
    )


def _demo(args) -> int:
    from ._training._demo import format_table, run_demo

    rows = run_demo(steps=args.steps, num_runs=args.runs, seed=args.seed)
    print(format_table(rows))
    return 0


def _simulate(args) -> int:
    import jax.random as jr
    import numpy as np

    from . import problems, variants
    from ._estimators._observables import observables
    from ._problems._sampler import UniformSubset, WithoutReplacement, WithReplacement
    from ._sde._sde_model import sde_model
    from ._sde._simulate import simulate

    makers = {
        "quadratic": problems.quadratic,
        "linear_regression": problems.linear_regression,
        "sharp_flat_basins": problems.sharp_flat_basins,
        "teacher_student": problems.teacher_student,
        "breast_cancer_logistic": problems.breast_cancer_logistic,
    }
    check_output(args.out)
    problem = makers[args.problem]()
    variant = variants.get(args.variant, **variant_options(args, default_m=1))
    kind = UniformSubset if args.uniform_subset else WithReplacement if args.with_replacement else WithoutReplacement
    sampler = kind(args.batch_size)
    model = sde_model(
        problem,
        variant,
        sampler,
        eta=args.eta,
        diffusion=args.diffusion,
        order=args.order,
        drift=args.drift,
        num_samples=args.num_samples,
        drift_rtol=args.drift_rtol,
    )
    paths = simulate(
        model,
        t1=args.t1,
        num_paths=args.paths,
        key=jr.key(args.seed),
        record=observables("loss", "grad_norm_sq", every=args.every),
        paths_per_block=args.paths_per_block,
        progress=not args.no_progress,
    )
    if args.out:  # first, so that nothing computed is lost to a table that cannot be formed
        print(f"wrote {paths.save(args.out)} (read it with sde_sam.Paths.load)")
    print(
        f"{variant.name} SDE on {problem.name}: {args.paths} paths, t1={args.t1}, dt={paths.dt:g}, "
        f"diverged {paths.num_diverged}, {paths.wall_time_s:.2f} s"
    )
    kept = paths.num_paths - paths.num_diverged
    if kept == 0:
        print("every path diverged: no mean to print")
        return 0
    mean = paths.mean("loss")
    se = paths.stderr("loss") if kept >= 2 else np.full_like(mean, np.nan)  # one path has no standard error
    print(f"{'t':>8}{'E loss':>14}{'stderr':>12}")
    for t, m, s in zip(paths.times, mean, se, strict=True):
        print(f"{t:>8.3g}{m:>14.6g}{s:>12.2g}")
    return 0


def _validate(args) -> int:
    import jax.random as jr

    from . import problems, variants
    from ._estimators._observables import observables
    from ._problems._sampler import UniformSubset
    from ._validation._validate import validate
    from ._validation._verdict import Tolerance

    check_output(args.out)
    makers = {
        "quadratic": problems.quadratic,
        "linear_regression": problems.linear_regression,
        "sharp_flat_basins": problems.sharp_flat_basins,
        "digits_mlp": lambda: problems.digits_mlp(hidden=16),
        "mnist1d_mlp": lambda: problems.mnist1d_mlp(hidden=32),
        "mnist1d_cnn": problems.mnist1d_cnn,
    }
    if args.steps % args.every:
        raise ValueError(f"--every={args.every} must divide --steps={args.steps}")
    problem = makers[args.problem]()
    variant = variants.get(args.variant, **variant_options(args, default_m=1))
    result = validate(
        problem,
        variant,
        UniformSubset(args.batch_size),
        eta=args.eta,
        steps=args.steps,
        num_runs=args.runs,
        key=jr.key(args.seed),
        record=observables(*args.observables.split(","), every=args.every),
        max_refine=args.max_refine,
        tolerance=Tolerance(relative=args.tolerance),
        progress=not args.no_progress,
        log=lambda line: print(line, flush=True),
    )
    if args.out:
        print(f"wrote {result.save(args.out)} (read it with sde_sam.Validation.load)")
    print(result)
    return 0


def _train(args) -> int:
    from . import train

    check_output(args.out)
    every = args.every if args.every is not None else (50 if args.steps % 50 == 0 else args.steps)
    kw = variant_options(args, default_m=4)
    config = train.TrainConfig(
        problem=args.problem,
        problem_kwargs={"hidden": args.hidden} if args.problem.endswith("_mlp") else {},
        variant=args.variant,
        variant_kwargs=kw,
        batch_size=args.batch_size,
        eta=args.eta,
        steps=args.steps,
        every=every,
        seeds=args.seeds,
        observables=tuple(args.observables.split(",")),
    )
    rec = train.record(config, progress=not args.no_progress)
    print(
        f"{config.variant} on {config.problem}: {len(config.seeds)} seeds, {config.steps} steps, "
        f"diverged {rec.meta['num_diverged']}"
    )
    names = list(rec.values)
    print(f"{'step':>6}" + "".join(f"{n:>16}" for n in names))
    for j, s in enumerate(rec.steps):
        print(f"{s:>6}" + "".join(f"{rec.mean(n)[j]:>16.5g}" for n in names))
    if args.out:
        print(f"wrote {rec.save(args.out)}")
    return 0


#: Entry-point group of commands contributed by other installed packages.
COMMANDS_GROUP = "sde_sam.commands"


def _plugin_commands():
    from importlib.metadata import entry_points

    return [ep.load() for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sde-sam", description="SAM variants, their SDEs, estimators and checks.", formatter_class=HelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    for register in _plugin_commands():  # commands of installed packages (the reproduction pipeline: analysis.cli)
        register(sub)
    sim = sub.add_parser(
        "simulate", help="simulate one variant's SDE and print E[loss] over time", formatter_class=HelpFormatter
    )
    sim.add_argument(
        "--problem",
        default="linear_regression",
        choices=("quadratic", "linear_regression", "sharp_flat_basins", "teacher_student", "breast_cancer_logistic"),
        help="built-in problem",
    )
    add_variant_options(sim, default_m=1)
    sim.add_argument("--batch-size", type=positive_int, default=8, help="batch size B")
    smp = sim.add_mutually_exclusive_group()
    smp.add_argument("--with-replacement", action="store_true", help="i.i.d. batch indices (default: shuffled epochs)")
    smp.add_argument(
        "--uniform-subset",
        action="store_true",
        help="a fresh uniform subset each step, the sampler the SDE models exactly (default: shuffled epochs)",
    )
    sim.add_argument(
        "--drift",
        default="general",
        choices=("general", "closed_form", "expected"),
        help="general: first order in rho; closed_form: DESIGN 3.1 formulas; expected: E[G], exact in rho",
    )
    sim.add_argument(
        "--num-samples",
        type=positive_int,
        default=None,
        help="Monte Carlo batches per drift evaluation when the batches are not enumerable "
        "(default: sized so the drift's standard error is --drift-rtol of its norm at the start)",
    )
    sim.add_argument(
        "--drift-rtol",
        type=float,
        default=0.01,
        help="target standard error of the Monte Carlo drift relative to its norm (when --num-samples is unset)",
    )
    sim.add_argument("--eta", type=float, default=0.05, help="learning rate of the modelled method")
    sim.add_argument("--t1", type=float, default=2.0, help="final SDE time (t = steps * eta)")
    sim.add_argument("--paths", type=positive_int, default=256, help="number of paths")
    sim.add_argument(
        "--paths-per-block",
        type=lambda text: text if text in ("rule", "calibrate") else positive_int(text),
        default=None,
        help="paths advanced together: a positive integer, 'rule' or 'calibrate' (default: the rule, calibrated "
        "for long calls; see sde_sam.simulate)",
    )
    sim.add_argument("--every", type=positive_int, default=10, help="record every this many SDE steps")
    sim.add_argument(
        "--diffusion", default="leading", choices=("leading", "first_order", "empirical", "none"), help="diffusion"
    )
    sim.add_argument("--order", type=int, default=1, choices=(1, 2), help="order of the SME drift")
    sim.add_argument("--seed", type=int, default=0, help="PRNG seed (jax.random.key(seed))")
    sim.add_argument("--out", default=None, help="write OUT.json + OUT.npz (checked before any work)")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")
    sim.set_defaults(func=_simulate)

    tr = sub.add_parser(
        "train",
        help="train a small network with one variant over seeds and print the record",
        formatter_class=HelpFormatter,
    )
    tr.add_argument(
        "--problem",
        default="digits_mlp",
        help="network",
        choices=("digits_mlp", "digits_cnn", "mnist1d_mlp", "mnist1d_cnn"),
    )
    tr.add_argument("--hidden", type=positive_int, default=32, help="hidden width of digits_mlp and mnist1d_mlp")
    add_variant_options(tr, default_m=4)
    tr.add_argument("--batch-size", type=positive_int, default=64, help="batch size B")
    tr.add_argument("--eta", type=float, default=0.1, help="learning rate")
    tr.add_argument("--steps", type=positive_int, default=200, help="training steps")
    tr.add_argument(
        "--every",
        type=positive_int,
        default=None,
        help="record every this many steps (default: 50, or --steps when 50 does not divide it)",
    )
    tr.add_argument("--seeds", type=seeds, default="2", help="a count (4: seeds 0..3) or a list (0,1,7)")
    tr.add_argument("--observables", default="loss,accuracy,trace_sigma", help="comma-separated names")
    tr.add_argument("--out", default=None, help="write OUT.json + OUT.npz (checked before any work)")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.set_defaults(func=_train)

    val = sub.add_parser(
        "validate",
        help="does an SDE describe a variant on a built-in problem? The ladder, SVAG and a verdict per observable",
        formatter_class=HelpFormatter,
    )
    val.add_argument(
        "--problem",
        default="linear_regression",
        choices=("quadratic", "linear_regression", "sharp_flat_basins", "digits_mlp", "mnist1d_mlp", "mnist1d_cnn"),
        help="built-in problem (digits_mlp: hidden width 16; mnist1d_mlp: 32)",
    )
    add_variant_options(val, default_m=1)
    val.add_argument("--batch-size", type=positive_int, default=8, help="batch size B (uniform subsets)")
    val.add_argument("--eta", type=float, default=0.05, help="learning rate")
    val.add_argument("--steps", type=positive_int, default=40, help="discrete steps")
    val.add_argument("--every", type=positive_int, default=10, help="record every this many steps")
    val.add_argument("--runs", type=positive_int, default=32, help="discrete runs, SVAG runs and SDE paths each")
    val.add_argument("--observables", default="loss", help="comma-separated names (loss, accuracy, trace_sigma, ...)")
    val.add_argument("--max-refine", type=int, default=2, help="halvings of dt at most per rung")
    val.add_argument("--tolerance", type=float, default=0.05, help="tolerance relative to each observable's scale")
    val.add_argument("--seed", type=int, default=0, help="PRNG seed (jax.random.key(seed))")
    val.add_argument("--out", default=None, help="write OUT.json (checked before any work)")
    val.add_argument("--no-progress", action="store_true", help="no progress bar")
    val.set_defaults(func=_validate)

    demo = sub.add_parser(
        "demo", help="train the digits MLP with every variant and print a table", formatter_class=HelpFormatter
    )
    demo.add_argument("--steps", type=positive_int, default=200, help="training steps per variant")
    demo.add_argument("--runs", type=positive_int, default=2, help="independent runs per variant")
    demo.add_argument("--seed", type=int, default=0, help="PRNG seed")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return run(f"sde-sam {args.command}", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
