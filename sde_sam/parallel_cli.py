"""Streaming SDE moments on every device of one or several processes: ``python -m sde_sam.parallel_cli``.

Each process of a multi-process run starts this with the same arguments and its own ``--process-id`` (or
``SDE_SAM_PROCESS_ID``); process 0 writes ``--out`` (``.json`` + ``.npz``) and prints one JSON summary line.
Example (two processes on one host)::

    python -m sde_sam.parallel_cli --coordinator 127.0.0.1:12345 --num-processes 2 --process-id 0 --out res/m &
    python -m sde_sam.parallel_cli --coordinator 127.0.0.1:12345 --num-processes 2 --process-id 1 --out res/m
"""

from __future__ import annotations

import argparse
import json
import sys

from ._cli_support import HelpFormatter, check_output, json_object, levels, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sde_sam.parallel_cli",
        description=(__doc__ or "").splitlines()[0],
        formatter_class=HelpFormatter,
    )
    g = p.add_argument_group("distributed runtime (default: SDE_SAM_* / JAX_* environment, else one process)")
    g.add_argument("--coordinator", help="host:port of process 0's coordinator")
    g.add_argument("--num-processes", type=int, help="number of processes of the run")
    g.add_argument("--process-id", type=int, help="this process's index, 0 .. num_processes - 1")
    g.add_argument("--cpu-collectives", default="gloo", help="CPU cross-process collectives (gloo|mpi|none)")
    m = p.add_argument_group("model")
    m.add_argument("--problem", default="linear_regression", help="a sde_sam.problems factory")
    m.add_argument(
        "--problem-kw",
        type=json_object("--problem-kw"),
        default='{"n": 32, "d": 4, "seed": 0}',
        help="JSON keyword arguments",
    )
    m.add_argument("--variant", default="sam", help="a sde_sam.variants name")
    m.add_argument(
        "--variant-kw", type=json_object("--variant-kw"), default='{"rho": 0.05}', help="JSON keyword arguments"
    )
    m.add_argument("--batch-size", type=int, default=4, help="batch size B (WithReplacement)")
    m.add_argument("--eta", type=float, default=0.05, help="learning rate of the modelled method")
    m.add_argument("--diffusion", default="leading", help="leading | first_order | empirical | none")
    m.add_argument("--drift", default="general", help="general | closed_form | expected")
    s = p.add_argument_group("simulation")
    s.add_argument("--t1", type=float, default=1.0, help="final SDE time")
    s.add_argument("--num-paths", type=int, default=1024, help="number of paths (at least 2)")
    s.add_argument("--chunk-paths", type=int, help="paths per chunk (memory bound; default min(num_paths, 65536))")
    s.add_argument("--paths-per-block", type=int, help="paths vmapped together on a device")
    s.add_argument("--record", default="loss,param_norm_sq", help="comma-separated observable names")
    s.add_argument("--every", type=int, default=1, help="record every this many SDE steps")
    s.add_argument("--quantiles", type=levels, default=(), help="comma-separated levels in (0, 1), e.g. 0.1,0.5,0.9")
    s.add_argument("--seed", type=int, default=0, help="PRNG seed (jax.random.key(seed))")
    s.add_argument(
        "--per-path",
        action="store_true",
        help="also simulate all paths at once over the mesh and save them (values.<name>)",
    )
    s.add_argument("--out", help="result path (process 0 writes <out>.json and <out>.npz)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run("python -m sde_sam.parallel_cli", lambda: _main(args))


def _main(args) -> int:
    from ._parallel import _parallel as par

    check_output(args.out)
    par.initialize(
        args.coordinator,
        args.num_processes,
        args.process_id,
        cpu_collectives=None if args.cpu_collectives == "none" else args.cpu_collectives,
    )
    import jax
    import jax.random as jr

    import sde_sam as ss

    factory = getattr(ss.problems, args.problem, None)
    if args.problem.startswith("_") or not callable(factory):
        raise ValueError(f"`--problem` {args.problem!r} is not a sde_sam.problems factory")
    problem = factory(**args.problem_kw)
    if not isinstance(problem, ss.Problem):
        raise ValueError(f"`--problem` {args.problem!r} did not build a sde_sam.Problem")
    variant = ss.variants.get(args.variant, **args.variant_kw)
    model = ss.sde_model(
        problem, variant, ss.WithReplacement(args.batch_size), eta=args.eta, diffusion=args.diffusion, drift=args.drift
    )
    record = ss.observables(*[r for r in args.record.split(",") if r], every=args.every)
    mesh = par.make_mesh()
    moments = par.simulate_moments(
        model,
        t1=args.t1,
        num_paths=args.num_paths,
        chunk_paths=args.chunk_paths,
        paths_per_block=args.paths_per_block,
        key=jr.key(args.seed),
        record=record,
        quantiles=args.quantiles,
        mesh=mesh,
    )
    extra = {}
    if args.per_path:
        paths = par.simulate(
            model,
            t1=args.t1,
            num_paths=args.num_paths,
            key=jr.key(args.seed),
            record=record,
            mesh=mesh,
            paths_per_block=args.paths_per_block,
        )
        extra = {f"values.{k}": v for k, v in paths.values.items()}
    summary = {
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "count": moments.count,
        "num_diverged": moments.num_diverged,
        "seed": args.seed,
        "key": moments.config["key"],
        "wall_time_s": moments.wall_time_s,
        "mean": {k: v.tolist() for k, v in moments.mean.items()},
    }
    if args.out and par.is_main_process():
        summary["out"] = str(par.save(args.out, moments, arrays=extra))
    if par.is_main_process():
        print(json.dumps(summary), flush=True)
    par.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
