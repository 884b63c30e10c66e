"""A grid of (eta, rho) against its points one by one: compilations and execute time of a sweep.

On the digits MLP (B = 32), SAM and m-SAM (m = 4) over a 4 x 4 grid of ``eta`` and ``rho``: at each point the
discrete runs (``run_discrete``) and one SDE rung (general drift, leading diffusion, ``simulate`` to the same time
``t = steps * eta``, so the same number of SDE steps). ``eta`` and ``rho`` are traced values of the compiled
programs, so the grid compiles each variant's programs once. The grid is run first (its wall time includes every
compilation); then every point is run again, one by one, with its programs already compiled (the execute-only
wall of each point). Compilations are counted with ``jax.monitoring`` (XLA backend compiles).

Printed: per variant, compiles and compile seconds of the grid and of its first point, the grid's wall, the sum of
the points' execute-only walls. Last line, one JSON object:
``sweep_vs_points_execute`` (grid wall / sum of the points' execute-only walls, per variant; target <= 1.3) and
``sweep_compiles_per_variant`` (compiles of the whole grid / compiles of its first point; target 1).

    python benchmarks/sweep.py [--steps 200] [--runs 8] [--paths 8] [--hidden 32]
"""

from __future__ import annotations

import argparse
import json
import time

import jax.random as jr

import sde_sam as ss
from sde_sam._compiles import process_count


def point(problem, variant, sampler, eta, args):
    """Discrete runs and one SDE rung at one point of the grid."""
    runs = ss.run_discrete(
        problem,
        variant,
        sampler,
        eta=eta,
        steps=args.steps,
        num_runs=args.runs,
        key=jr.key(0),
        record=ss.observables("loss", every=args.steps // 4),
        progress=False,
    )
    model = ss.sde_model(problem, variant, sampler, eta=eta, drift=ss.sde.GeneralDrift(num_samples=64))
    paths = ss.simulate(
        model,
        t1=args.steps * eta,
        num_paths=args.paths,
        key=jr.key(1),
        record=ss.observables("loss", every=args.steps // 4),
        progress=False,
    )
    return runs.mean("loss")[-1], paths.mean("loss")[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--paths", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=32)
    args = parser.parse_args()
    compiles = process_count()

    problem = ss.problems.digits_mlp(hidden=args.hidden)
    sampler = ss.WithReplacement(32)
    etas = (0.0125, 0.025, 0.05, 0.1)
    rhos = (0.01, 0.02, 0.05, 0.1)
    variants = {"sam": lambda rho: ss.variants.sam(rho), "m_sam_m4": lambda rho: ss.variants.m_sam(rho, 4)}
    ratios = {}
    for label, make in variants.items():
        grid = [(eta, rho) for eta in etas for rho in rhos]
        c0, s0, t0 = compiles.count, compiles.seconds, time.perf_counter()
        point(problem, make(grid[0][1]), sampler, grid[0][0], args)
        first_compiles, first_seconds = compiles.count - c0, compiles.seconds - s0
        for eta, rho in grid[1:]:
            point(problem, make(rho), sampler, eta, args)
        grid_wall = time.perf_counter() - t0
        grid_compiles, grid_seconds = compiles.count - c0, compiles.seconds - s0
        executes = []
        for eta, rho in grid:
            t = time.perf_counter()
            point(problem, make(rho), sampler, eta, args)
            executes.append(time.perf_counter() - t)
        print(
            f"{label}: grid of {len(grid)} points: {grid_compiles} compiles ({grid_seconds:.1f} s), first point "
            f"{first_compiles} compiles ({first_seconds:.1f} s); grid wall {grid_wall:.1f} s; points one by one, "
            f"execute only: {sum(executes):.1f} s in all; compiles during them: "
            f"{compiles.count - c0 - grid_compiles}",
            flush=True,
        )
        ratios[f"sweep_vs_points_execute_{label}"] = round(grid_wall / sum(executes), 3)
        ratios[f"sweep_compiles_per_variant_{label}"] = round(grid_compiles / max(first_compiles, 1), 3)
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
