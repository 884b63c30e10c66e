"""Time per step of every variant relative to SGD and SAM on the digits MLP (B = 128).

Each timed call runs ``--steps`` steps inside one jitted ``lax.scan`` (the runner's per-step cost, no Python
dispatch). Rounds are interleaved across variants (each round times every variant once) and each ratio is
the median over rounds of the per-round ratio, so drifting machine load cancels; each round takes a fresh
random order (seeded), so no call is always timed in the same place or after the same call. "serial m-SAM" is
m-SAM as the original implementation runs it: the micro-batches one after another (a scan), each a SAM step.
Beside the times: XLA's flop and byte counts of one compiled step (hardware-independent), and their ratio to SAM.
Last printed line: one JSON object of the ratios (times, and ``*_vs_sam_flops``).

    python benchmarks/variants.py [--repeats 21] [--steps 50] [--hidden 64]
"""

from __future__ import annotations

import argparse
import json
import statistics

import sde_sam as ss
from sde_sam._cost import serial_m_sam_step_cost, step_cost
from sde_sam._training._timing import interleaved_times, median_ratio, variant_calls


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()

    problem = ss.problems.digits_mlp(hidden=args.hidden)
    B, rho = 128, 0.05
    V = ss.variants
    variants = {
        "sgd": V.sgd(),
        "sam": V.sam(rho),
        "usam": V.usam(rho),
        "n_sam": V.n_sam(rho),
        "m_sam_m4": V.m_sam(rho, 4),
        "m_sam_m16": V.m_sam(rho, 16),
        "m_sam_m64": V.m_sam(rho, 64),
        "f_sam": V.f_sam(rho),
        "sam_on": V.sam_on(rho),
        "rw_sam": V.rw_sam(rho),
        "rw_sam_weighted_descent": V.rw_sam(rho, weights_in_descent=True),
        "rw_sam_exact_score": V.rw_sam(rho, score="exact"),
    }
    calls = variant_calls(problem, variants, ss.WithoutReplacement(B), args.steps, serial_micro_batch_sizes=(16, 64))
    samples = interleaved_times(calls, args.repeats, args.steps)

    def key(name):
        return name.replace("serial m-SAM (m=", "serial_m_sam_m").rstrip(")")

    print(
        f"digits MLP (d = {problem.dim}), B = {B}: medians over {args.repeats} interleaved rounds, "
        f"{args.steps} steps per timed call"
    )
    costs = {name: step_cost(problem, v, B) for name, v in variants.items()}
    costs |= {f"serial m-SAM (m={m})": serial_m_sam_step_cost(problem, rho, m, B) for m in (16, 64)}
    print(f"{'variant':<28}{'ms/step':>9}{'x SGD':>8}{'x SAM':>8}{'MFLOP':>9}{'MB':>8}{'flops x SAM':>13}")
    for name in samples:
        c = costs[name]
        print(
            f"{key(name):<28}{1e3 * statistics.median(samples[name]):>9.3f}"
            f"{median_ratio(samples, name, 'sgd'):>8.2f}{median_ratio(samples, name, 'sam'):>8.2f}"
            f"{c.flops / 1e6:>9.2f}{c.bytes_accessed / 1e6:>8.2f}{c.flops / costs['sam'].flops:>13.3f}"
        )
    out = {f"{key(n)}_vs_sgd": round(median_ratio(samples, n, "sgd"), 3) for n in samples if n != "sgd"}
    out.update(
        {f"{key(n)}_vs_sam": round(median_ratio(samples, n, "sam"), 3) for n in samples if n not in ("sgd", "sam")}
    )
    out.update(
        {
            f"{key(n)}_vs_sam_flops": round(costs[n].flops / costs["sam"].flops, 3)
            for n in samples
            if n not in ("sgd", "sam")
        }
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
