"""Scaling of the SDE path ensemble: devices, processes, and ensemble size with chunking.

Run: ``PYTHONPATH=. python benchmarks/scaling.py`` (CPU; each configuration in its own subprocess).

1. Path-steps per second of :func:`sde_sam.parallel.simulate_moments` on a fixed workload for 1 CPU device,
   2 CPU devices in one process (``--xla_force_host_platform_device_count=2``) and 2 processes with one
   device each (``jax.distributed`` on 127.0.0.1, Gloo collectives); median of ``--repeats`` timed runs
   after one compile run.
2. Paths x steps from 1e3 to 1e6 (fixed steps, growing paths, ``--chunk`` paths per chunk), one subprocess
   per size: wall time of a second (compiled) call and peak RSS (``resource.getrusage``), plus the largest
   size without chunking for contrast.

The last printed line is one JSON object of ratios. Wall times on a shared machine are noisy: the figures
are medians and should be read as such.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model():
    import sde_sam as ss

    pr = ss.problems.linear_regression(n=64, d=8, seed=0)
    return ss.sde_model(pr, ss.variants.usam(0.05), ss.WithReplacement(8), eta=0.01, drift="closed_form")


def worker(args) -> None:
    import sde_sam as ss
    from sde_sam import parallel

    parallel.initialize(args.coordinator, args.num_processes, args.process_id)
    import resource

    import jax
    import jax.random as jr
    import numpy as np

    model = _model()
    mesh = parallel.make_mesh()
    kw = {
        "t1": args.steps * model.eta,
        "num_paths": args.paths,
        "key": jr.key(0),
        "record": ss.observables("loss", "param_norm_sq", every=args.steps),
        "chunk_paths": args.chunk,
        "mesh": mesh,
    }
    times = []
    m = None
    for _ in range(args.repeats + 1):  # the first call compiles: reported apart below
        start = time.perf_counter()
        m = parallel.simulate_moments(model, **kw)
        times.append(time.perf_counter() - start)
    assert m is not None
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if parallel.is_main_process():
        print(
            json.dumps(
                {
                    "times": times[1:],
                    "compile_run": times[0],
                    "devices": jax.device_count(),
                    "processes": jax.process_count(),
                    "paths": args.paths,
                    "steps": args.steps,
                    "chunk": m.config["chunk_paths"],
                    "rss_mib": rss_kib / 1024,
                    "mean_loss": float(np.asarray(m.mean["loss"])[-1]),
                }
            ),
            flush=True,
        )
    parallel.shutdown()


def _env(devices: int = 1) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SDE_SAM_", "XLA_FLAGS", "JAX_COORDINATOR"))}
    env |= {"JAX_PLATFORMS": "cpu", "PYTHONPATH": ROOT + os.pathsep + env.get("PYTHONPATH", "")}
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _cmd(paths, steps, chunk, repeats, extra=()):
    return [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        "--paths",
        str(paths),
        "--steps",
        str(steps),
        "--chunk",
        str(chunk),
        "--repeats",
        str(repeats),
        *extra,
    ]


def _last_json(text: str) -> dict:
    return json.loads([line for line in text.splitlines() if line.startswith("{")][-1])


def run_one(paths, steps, chunk, repeats, devices=1, timeout=900) -> dict:
    proc = subprocess.run(
        _cmd(paths, steps, chunk, repeats), env=_env(devices), capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    return _last_json(proc.stdout)


def run_two_processes(paths, steps, chunk, repeats, timeout=900) -> dict:
    from sde_sam import parallel

    procs = parallel.launch_local(_cmd(paths, steps, chunk, repeats), 2, env=_env(1), timeout=timeout)
    for p in procs:
        if p.returncode:
            raise RuntimeError(p.stderr[-3000:])
    return _last_json(procs[0].stdout)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--worker", action="store_true")
    p.add_argument("--coordinator")
    p.add_argument("--num-processes", type=int)
    p.add_argument("--process-id", type=int)
    p.add_argument("--paths", type=int, default=512)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--chunk", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--size-steps", type=int, default=100, help="steps of the size sweep")
    p.add_argument("--size-chunk", type=int, default=1000, help="paths per chunk in the size sweep")
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    import numpy as np

    chunk = args.chunk or args.paths
    work = args.paths * args.steps
    print(
        f"fixed workload: {args.paths} paths x {args.steps} steps, linear regression d=8, USAM closed-form drift; "
        f"median of {args.repeats} runs (shared 2-core machine: noisy)"
    )
    res = {
        "1 device": run_one(args.paths, args.steps, chunk, args.repeats, devices=1),
        "2 devices": run_one(args.paths, args.steps, chunk, args.repeats, devices=2),
        "2 processes": run_two_processes(args.paths, args.steps, chunk, args.repeats),
    }
    rate = {}
    for name, r in res.items():
        t = float(np.median(r["times"]))
        rate[name] = work / t
        print(
            f"  {name:12s} devices={r['devices']} processes={r['processes']}  median {t:.3f} s  "
            f"(min {min(r['times']):.3f}, max {max(r['times']):.3f})  {rate[name]:.3g} path-steps/s  "
            f"final mean loss {r['mean_loss']:.6f}"
        )

    steps = args.size_steps
    sizes = [10, 100, 1000, 10000]  # paths: paths x steps = 1e3 ... 1e6
    print(
        f"size sweep: {steps} steps, paths 10..1e4, {args.size_chunk} paths per chunk, "
        f"median of {args.repeats} compiled runs, peak RSS of the subprocess"
    )
    sweep = {}
    for n in sizes:
        r = run_one(n, steps, min(args.size_chunk, n), args.repeats)
        sweep[n] = r
        t = float(np.median(r["times"]))
        print(
            f"  paths x steps = {n * steps:.0e}: chunk {r['chunk']}  median {t:.4f} s  "
            f"{t / (n * steps) * 1e9:.1f} ns/path-step  peak RSS {r['rss_mib']:.0f} MiB"
        )
    big = sizes[-1]
    unchunked = run_one(big, steps, big, args.repeats)
    tu = float(np.median(unchunked["times"]))
    print(f"  paths x steps = {big * steps:.0e} unchunked: median {tu:.4f} s  peak RSS {unchunked['rss_mib']:.0f} MiB")
    per = {n: float(np.median(r["times"])) / (n * steps) for n, r in sweep.items()}
    ns = np.asarray(sizes[1:], float)
    slope = float(np.polyfit(np.log(ns * steps), np.log([per[int(n)] * n * steps for n in ns]), 1)[0])
    print(f"  log-log slope of wall time vs paths x steps (1e4..1e6): {slope:.3f}")
    ratios = {
        "two_devices_vs_one": rate["2 devices"] / rate["1 device"],
        "two_processes_vs_one": rate["2 processes"] / rate["1 device"],
        "time_per_path_step_1e6_vs_1e3": per[sizes[-1]] / per[sizes[0]],
        "time_per_path_step_1e6_vs_1e4": per[sizes[-1]] / per[sizes[1]],
        "time_slope_1e4_to_1e6": slope,
        "peak_rss_1e6_vs_1e3": sweep[sizes[-1]]["rss_mib"] / sweep[sizes[0]]["rss_mib"],
        "peak_rss_1e6_unchunked_vs_1e3": unchunked["rss_mib"] / sweep[sizes[0]]["rss_mib"],
    }
    print(json.dumps({k: round(v, 4) for k, v in ratios.items()}))


if __name__ == "__main__":
    main()
