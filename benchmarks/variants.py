"""Time per step of every variant relative to SGD and SAM on the digits MLP (B = 128).

Each timed call runs ``--steps`` steps inside one jitted ``lax.scan`` (the runner's per-step cost, no Python
dispatch). Rounds are interleaved across variants (each round times every variant once) and each ratio is
the median over rounds of the per-round ratio, so drifting machine load cancels. The serial m-SAM row is
m-SAM as research code writes it: a Python loop of k jitted SAM steps on the micro-batches.
Last printed line: one JSON object of the ratios.

    python benchmarks/variants.py [--repeats 7] [--steps 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.random as jr

import sde_sam as ss
from sde_sam._timing import scan_fn, stacked_batches


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()

    problem = ss.problems.digits_mlp(hidden=args.hidden)
    B, rho = 128, 0.05
    sampler = ss.WithoutReplacement(B)
    variants = {
        "sgd": ss.variants.sgd(),
        "sam": ss.variants.sam(rho),
        "usam": ss.variants.usam(rho),
        "n_sam": ss.variants.n_sam(rho),
        "m_sam_m4": ss.variants.m_sam(rho, 4),
        "m_sam_m16": ss.variants.m_sam(rho, 16),
        "m_sam_m64": ss.variants.m_sam(rho, 64),
        "f_sam": ss.variants.f_sam(rho),
        "sam_on": ss.variants.sam_on(rho),
        "rw_sam": ss.variants.rw_sam(rho),
        "rw_sam_weighted_descent": ss.variants.rw_sam(rho, weights_in_descent=True),
        "rw_sam_exact_score": ss.variants.rw_sam(rho, score="exact"),
    }
    batches = stacked_batches(problem, sampler, args.steps)
    params = problem.init_params
    calls = {}
    for name, v in variants.items():
        fn = scan_fn(problem, v)
        state = v.init(params)
        jax.block_until_ready(fn(params, state, batches, jr.key(1)))  # compile
        calls[name] = lambda fn=fn, state=state: fn(params, state, batches, jr.key(1))

    sam_step = ss._timing.step_fn(problem, ss.variants.sam(rho))

    def serial_m_sam(m):
        def run():  # k jitted SAM steps per update, averaged: the serial form of m-SAM
            p = params
            for s in range(args.steps):
                batch = jax.tree_util.tree_map(lambda a: a[s], batches)
                Gs = [sam_step(p, (), jax.tree_util.tree_map(lambda a: a[j * m:(j + 1) * m], batch), jr.key(0))[0]
                      for j in range(B // m)]
                p = jax.tree_util.tree_map(lambda *a: sum(a) / len(a), *Gs)
            return p
        return run

    for m in (16, 64):
        calls[f"serial_m_sam_m{m}"] = serial_m_sam(m)
        jax.block_until_ready(calls[f"serial_m_sam_m{m}"]())

    samples = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            jax.block_until_ready(call())
            samples[name].append((time.perf_counter() - start) / args.steps)

    def ratio(a, b):
        return statistics.median(x / y for x, y in zip(samples[a], samples[b]))

    print(f"digits MLP (d = {problem.dim}), B = {B}: medians over {args.repeats} interleaved rounds, "
          f"{args.steps} steps per timed call")
    print(f"{'variant':<28}{'ms/step':>9}{'x SGD':>8}{'x SAM':>8}")
    for name in samples:
        print(f"{name:<28}{1e3 * statistics.median(samples[name]):>9.3f}{ratio(name, 'sgd'):>8.2f}{ratio(name, 'sam'):>8.2f}")
    out = {f"{name}_vs_sgd": round(ratio(name, "sgd"), 3) for name in samples if name != "sgd"}
    out.update({f"{name}_vs_sam": round(ratio(name, "sam"), 3) for name in samples if name not in ("sgd", "sam")})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
