"""Benchmark of the Euler–Maruyama simulator (DESIGN §3.2, §8 F8).

Compares, per path-step, ``ss.simulate`` with: diffrax with a dense ``d x d`` diffusion (``sqrt(c(B) Sigma)`` by
``eigh`` each step, as research code does), diffrax with an ``n``-dimensional Brownian motion and a ``d x n``
diffusion (its best formulation here), a Python-loop Euler–Maruyama (jitted step called from a Python loop),
and the bare cost of one drift + one noise VJP per step (a minimal jitted scan of exactly that).
Variant: n-SAM (closed-form drift ``g + rho H g/||g||``), leading-order diffusion, ``WithReplacement(32)``.

Run: ``PYTHONPATH=. python benchmarks/simulate.py`` (``--quick`` for a smoke run). Medians of ``--repeats``
timed runs after one warm-up (compilation excluded). The last printed line is one JSON object of ratios.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
from jax.flatten_util import ravel_pytree

import sde_sam as ss
from sde_sam._sde._sde_model import step_keys
from sde_sam._sde._simulate import em_step


def timed(fn, repeats, warmup=True):
    if warmup:
        jax.block_until_ready(fn())  # warm-up (compiles)
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def make_model(problem):
    return ss.sde_model(problem, ss.variants.n_sam(0.05), ss.WithReplacement(32), eta=0.05, drift="closed_form")


def ours(model, paths, steps):
    rec = ss.observables("loss", every=steps)
    return lambda: ss.simulate(model, t1=model.eta * steps, num_paths=paths, key=jr.key(0), record=rec).final_params


def bare(model, paths, steps):
    """One drift + one noise VJP per step in a minimal jitted scan (no recording, no divergence check)."""
    dt, scale = model.eta, model.eta

    @jax.jit
    def run(model, keys):
        def one(key):
            def step(x, j):
                k1, k2 = step_keys(key, j)
                b = model.drift(x, k1)
                z = model.diffusion_sample(x, k2)
                return jax.tree_util.tree_map(lambda p, bb, zz: p - dt * bb + scale * zz, x, b, z), None

            return jax.lax.scan(step, model.problem.init_params, jnp.arange(steps))[0]

        return jax.vmap(one)(keys)

    keys = jr.split(jr.key(0), paths)
    return lambda: run(model, keys)


def python_loop(model, paths, steps):
    """Jitted (vmapped) step function called from a Python loop, as research code writes it."""

    @jax.jit
    def step(model, xs, keys, j):
        return jax.vmap(lambda x, key: em_step(model, x, key, j, model.eta))(xs, keys)

    keys = jr.split(jr.key(0), paths)
    x0 = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (paths, *a.shape)), model.problem.init_params)

    def run():
        xs = x0
        for j in range(steps):
            xs = step(model, xs, keys, j)
        return xs

    return run


def diffrax_run(model, paths, steps, dense: bool):
    import diffrax

    problem = model.problem
    flat0, unravel = ravel_pytree(problem.init_params)
    n, d = problem.num_examples, flat0.size
    c = model.noise_factor
    eta = model.eta

    def drift(t, y, args):
        return -ravel_pytree(model.drift(unravel(y)))[0]

    def centred_grads(y):
        G = jax.vmap(lambda ex: ravel_pytree(jax.grad(problem.loss_fn)(unravel(y), ex))[0])(problem.data)
        return G - G.mean(0)

    def diffusion_dense(t, y, args):  # d x d: sqrt(eta c Sigma) by eigh
        Gc = centred_grads(y)
        sigma = Gc.T @ Gc / n
        w, v = jnp.linalg.eigh(sigma)
        return jnp.sqrt(eta * c) * (v * jnp.sqrt(jnp.clip(w, 0.0))) @ v.T

    def diffusion_nd(t, y, args):  # d x n against an n-dimensional Brownian motion
        return jnp.sqrt(eta * c / n) * centred_grads(y).T

    @jax.jit
    def run(keys):
        def one(key):
            bm = diffrax.UnsafeBrownianPath(shape=(d,) if dense else (n,), key=key)
            terms = diffrax.MultiTerm(
                diffrax.ODETerm(drift), diffrax.ControlTerm(diffusion_dense if dense else diffusion_nd, bm)
            )
            sol = diffrax.diffeqsolve(
                terms,
                diffrax.Euler(),
                0.0,
                eta * steps,
                eta,
                flat0,
                saveat=diffrax.SaveAt(t1=True),
                max_steps=steps,
                adjoint=diffrax.ForwardMode(),
            )
            return sol.ys

        return jax.vmap(one)(keys)

    keys = jr.split(jr.key(0), paths)
    compiled = run.lower(keys).compile()  # ahead of time: a timed call never includes compilation
    return lambda: compiled(keys)


def interleaved(fns, repeats):
    """Median seconds of each ``fns[name]()`` over ``repeats`` rounds; one call of every function per round
    (round-robin), so a change of machine load hits all of them alike. Each is warmed up (compiled) first."""
    for fn in fns.values():
        jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


def bench_problem(
    tag, problem, paths, steps, repeats, dense_paths, dense_steps, dense_repeats, results, ratios, dense_warmup=True
):
    """``dense_warmup=False``: the dense case is timed on its first call (it is compiled ahead of time, so the
    time excludes compilation either way; the warm-up only repeats minutes of ``eigh`` work)."""
    model = make_model(problem)
    ps = paths * steps
    fns = {
        "ours": ours(model, paths, steps),
        "bare": bare(model, paths, steps),
        "python_loop": python_loop(model, paths, steps),
        "diffrax_best": diffrax_run(model, paths, steps, dense=False),
    }
    t = {k: v / ps for k, v in interleaved(fns, repeats).items()}
    t["diffrax_dense"] = timed(
        diffrax_run(model, dense_paths, dense_steps, dense=True), dense_repeats, dense_warmup
    ) / (dense_paths * dense_steps)
    results[tag] = {
        "d": problem.dim,
        "n": problem.num_examples,
        "paths": paths,
        "steps": steps,
        "repeats": repeats,
        "dense_paths": dense_paths,
        "dense_steps": dense_steps,
        "dense_repeats": dense_repeats,
        "dense_includes_compile": False,
        "dense_warmed_up": dense_warmup,
        "us_per_path_step": {k: 1e6 * v for k, v in t.items()},
    }
    ratios[f"ours_vs_diffrax_dense_{tag}"] = t["diffrax_dense"] / t["ours"]
    ratios[f"ours_vs_diffrax_best_{tag}"] = t["diffrax_best"] / t["ours"]
    ratios[f"ours_vs_python_loop_{tag}"] = t["python_loop"] / t["ours"]
    ratios[f"ours_over_bare_{tag}"] = t["ours"] / t["bare"]
    print(tag, json.dumps(results[tag]), flush=True)


def sweep_blocks(model, paths, steps, blocks, repeats):
    """Per path-step seconds of ``ss.simulate`` with each explicit block, with the block a long call takes by
    default (the calibrated one: ``paths_per_block="calibrate"``, what the default does above
    ``CALIBRATE_FLOPS``) and with the flop rule's (``"rule"``, what shorter calls take), timed round-robin;
    returns (times by block, {"default"/"rule": time}, {"default"/"rule": block}, calibration seconds)."""
    rec = ss.observables("loss", every=steps)
    kw = {"t1": model.eta * steps, "num_paths": paths, "key": jr.key(0), "record": rec, "progress": False}
    start = time.perf_counter()
    chosen = {"default": ss.simulate(model, paths_per_block="calibrate", **kw).config["paths_per_block"]}
    calibration_s = time.perf_counter() - start
    chosen["rule"] = ss.simulate(model, paths_per_block="rule", **kw).config["paths_per_block"]
    fns = {b: (lambda b=b: ss.simulate(model, paths_per_block=b, **kw).final_params) for b in blocks}
    for name, b in chosen.items():
        fns[name] = lambda b=b: ss.simulate(model, paths_per_block=b, **kw).final_params
    t = {k: v / (paths * steps) for k, v in interleaved(fns, repeats).items()}
    return {b: t[b] for b in blocks}, {k: t[k] for k in chosen}, chosen, calibration_s


def bench_default_block(results, ratios, repeats, quick):
    """``default_block_vs_best_<case>``: the default block of a long call (calibrated) over the best of a sweep
    (target <= 1.3); ``rule_block_vs_best_<case>``: the flop rule's block (short calls). The cases after the
    first three were not used to design the rule or the calibration (held out)."""
    sweep = (16, 64, 128, 256, 512, 1024)
    cases = {
        "linreg": (
            ss.problems.linear_regression(n=512, d=64),
            ss.variants.n_sam(0.05),
            ss.WithReplacement(32),
            1024,
            20,
            sweep,
        ),
        "linreg_musam": (
            ss.problems.linear_regression(),
            ss.variants.m_usam(0.05, micro_batch_size=4),
            ss.WithReplacement(16),
            1024,
            20,
            sweep,
        ),
        "digits": (ss.problems.digits_mlp(), ss.variants.n_sam(0.05), ss.WithReplacement(32), 16, 4, (1, 2, 4, 8, 16)),
        "linreg_musam_512x64": (
            ss.problems.linear_regression(n=512, d=64),
            ss.variants.m_usam(0.05, micro_batch_size=4),
            ss.WithReplacement(16),
            1024,
            10,
            sweep,
        ),
        "linreg_usam_128x128": (
            ss.problems.linear_regression(n=128, d=128),
            ss.variants.usam(0.05),
            ss.WithReplacement(32),
            1024,
            10,
            sweep,
        ),
        "cancer_sam": (
            ss.problems.breast_cancer_logistic(),
            ss.variants.sam(0.05),
            ss.WithReplacement(32),
            1024,
            10,
            sweep,
        ),
    }
    if quick:
        cases = {
            "linreg": (
                ss.problems.linear_regression(n=512, d=64),
                ss.variants.n_sam(0.05),
                ss.WithReplacement(32),
                64,
                4,
                (8, 64),
            )
        }
    for tag, (problem, variant, sampler, paths, steps, blocks) in cases.items():
        try:
            model = ss.sde_model(problem, variant, sampler, eta=0.05, drift="closed_form")
        except ValueError:  # no closed form for this variant
            model = ss.sde_model(problem, variant, sampler, eta=0.05)
        by_block, t_chosen, chosen, calibration_s = sweep_blocks(model, paths, steps, blocks, repeats)
        best = min(by_block, key=lambda b: by_block[b])
        t_best = min(by_block[best], *t_chosen.values())
        results[f"default_block_{tag}"] = {
            "d": problem.dim,
            "n": problem.num_examples,
            "paths": paths,
            "steps": steps,
            "default_block": chosen["default"],
            "rule_block": chosen["rule"],
            "best_block": best,
            "calibration_s": calibration_s,
            "us_per_path_step": {str(k): 1e6 * v for k, v in by_block.items()}
            | {k: 1e6 * v for k, v in t_chosen.items()},
        }
        ratios[f"rule_block_vs_best_{tag}"] = t_chosen["rule"] / t_best
        ratios[f"default_block_vs_best_{tag}"] = t_chosen["default"] / t_best
        print(f"default_block_{tag}", json.dumps(results[f"default_block_{tag}"]), flush=True)


def bench_runs_block(results, ratios, repeats, quick):
    """``default_runs_block_vs_best_<case>``: ``ss.run_discrete``'s default ``runs_per_block`` of a long call
    (calibrated) over the best of a sweep of explicit blocks (target <= 1.3), timed round-robin;
    ``rule_runs_block_vs_best_<case>``: the flop rule's block (what short calls take)."""
    cases = {
        "linreg_nsam": (
            ss.problems.linear_regression(n=512, d=64),
            ss.variants.n_sam(0.05),
            ss.WithReplacement(32),
            1024,
            40,
            (16, 64, 128, 256, 512, 1024),
        ),
        "digits_sam": (
            ss.problems.digits_mlp(),
            ss.variants.sam(0.05),
            ss.WithReplacement(32),
            64,
            10,
            (4, 8, 16, 32, 64),
        ),
    }
    if quick:
        cases = {
            "linreg_nsam": (
                ss.problems.linear_regression(n=512, d=64),
                ss.variants.n_sam(0.05),
                ss.WithReplacement(32),
                64,
                4,
                (8, 64),
            )
        }
    for tag, (problem, variant, sampler, runs, steps, blocks) in cases.items():
        rec = ss.observables("loss", every=steps)
        kw = {"eta": 0.05, "steps": steps, "num_runs": runs, "key": jr.key(0), "record": rec, "progress": False}
        start = time.perf_counter()
        chosen = {
            "default": ss.run_discrete(problem, variant, sampler, runs_per_block="calibrate", **kw).config[
                "runs_per_block"
            ]
        }
        calibration_s = time.perf_counter() - start
        chosen["rule"] = ss.run_discrete(problem, variant, sampler, runs_per_block="rule", **kw).config[
            "runs_per_block"
        ]
        chosen = {k: runs if v is None else v for k, v in chosen.items()}
        fns = {
            b: (lambda b=b: ss.run_discrete(problem, variant, sampler, runs_per_block=b, **kw).values["loss"])
            for b in blocks
        }
        for name, b in chosen.items():
            fns[name] = lambda b=b: ss.run_discrete(problem, variant, sampler, runs_per_block=b, **kw).values["loss"]
        t = {k: v / (runs * steps) for k, v in interleaved(fns, repeats).items()}
        best = min(blocks, key=lambda b: t[b])
        t_best = min(t[best], t["default"], t["rule"])
        results[f"runs_block_{tag}"] = {
            "d": problem.dim,
            "n": problem.num_examples,
            "runs": runs,
            "steps": steps,
            "default_block": chosen["default"],
            "rule_block": chosen["rule"],
            "best_block": best,
            "calibration_s": calibration_s,
            "us_per_run_step": {str(k): 1e6 * v for k, v in t.items()},
        }
        ratios[f"rule_runs_block_vs_best_{tag}"] = t["rule"] / t_best
        ratios[f"default_runs_block_vs_best_{tag}"] = t["default"] / t_best
        print(f"runs_block_{tag}", json.dumps(results[f"runs_block_{tag}"]), flush=True)


def bench_monte_carlo_drift(results, ratios, repeats, quick):
    """m-SAM (m = 2, rho = 0.1, ``WithoutReplacement(8)``, ``linear_regression()``): a path-step with the general
    drift against one with the closed form, both at the size the 1 % target gives (``general_vs_closed_form_drift``,
    target <= 3), and the weak error the Monte Carlo drift adds: on ``linear_regression(n=32, d=4)`` (496
    micro-batches, enumerable) the same paths (same keys) with the exact drift and with a forced Monte Carlo
    one; the paired difference of E[loss(t1)] with its standard error."""
    pr = ss.problems.linear_regression()
    variant, sampler = ss.variants.m_sam(0.1, micro_batch_size=2), ss.WithoutReplacement(8)
    general = ss.sde_model(pr, variant, sampler, eta=0.05)
    closed = ss.sde_model(pr, variant, sampler, eta=0.05, drift="closed_form", num_samples=general.num_samples)
    paths, steps = (16, 2) if quick else (64, 10)
    rec = ss.observables("loss", every=steps)
    kw = {"t1": 0.05 * steps, "num_paths": paths, "key": jr.key(0), "record": rec, "progress": False}
    fns = {
        "general": lambda: ss.simulate(general, **kw).final_params,
        "closed_form": lambda: ss.simulate(closed, **kw).final_params,
    }
    t = {k: v / (paths * steps) for k, v in interleaved(fns, repeats).items()}
    small = ss.problems.linear_regression(n=32, d=4)
    exact = ss.sde_model(small, variant, sampler, eta=0.05)
    mc = ss.sde_model(small, variant, sampler, eta=0.05, max_enumeration=1)  # forced Monte Carlo, sized to 1 %
    n_paths = 256 if quick else 4096
    kw = {
        "t1": 1.0,
        "num_paths": n_paths,
        "key": jr.key(1),
        "record": ss.observables("loss", every=20),
        "progress": False,
    }
    loss_exact = ss.simulate(exact, **kw).values["loss"][:, -1]
    diff = ss.simulate(mc, **kw).values["loss"][:, -1] - loss_exact
    results["monte_carlo_drift"] = {
        "num_samples": general.num_samples,
        "predicted_rel_stderr": general.drift_rel_stderr,
        "paths": paths,
        "steps": steps,
        "us_per_path_step": {k: 1e6 * v for k, v in t.items()},
        "weak_error": {
            "num_samples": mc.num_samples,
            "paths": n_paths,
            "t1": 1.0,
            "mean_loss_exact": float(ss.mean_stderr(loss_exact)[0]),
            "sde_stderr": float(ss.mean_stderr(loss_exact)[1]),
            "paired_difference": float(ss.mean_stderr(diff)[0]),
            "paired_stderr": float(ss.mean_stderr(diff)[1]),
        },
    }
    ratios["general_vs_closed_form_drift"] = t["general"] / t["closed_form"]
    print("monte_carlo_drift", json.dumps(results["monte_carlo_drift"]), flush=True)


def memory_demo(results, hidden=(300, 256), paths=4, steps=10):
    """A ~1e5-parameter MLP: compiled peak temporary memory and process peak RSS vs ``d^2`` floats."""
    from sde_sam._sde._simulate import _simulate_jit, program_args

    problem = ss.problems.digits_mlp(hidden=hidden)
    model = make_model(problem)
    rec = ss.observables("loss", every=steps)
    keys = jr.split(jr.key(0), paths)
    bound = rec.bind(problem, model.variant, model.sampler)  # the arguments `ss.simulate` passes its program
    compiled = _simulate_jit.lower(*program_args(model, keys, 1, bound, float(model.eta), False, 1e12, paths)).compile()
    mem = compiled.memory_analysis()
    assert mem is not None, "this backend reports no memory analysis"
    t = time.perf_counter()
    out = ss.simulate(model, t1=model.eta * steps, num_paths=paths, key=jr.key(0), record=rec)
    wall = time.perf_counter() - t
    d = problem.dim
    results["memory"] = {
        "d": d,
        "paths": paths,
        "steps": steps,
        "finite": bool(out.num_diverged == 0),
        "temp_bytes": int(mem.temp_size_in_bytes),
        "argument_bytes": int(mem.argument_size_in_bytes),
        "output_bytes": int(mem.output_size_in_bytes),
        "peak_rss_bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
        "d_squared_float32_bytes": 4 * d * d,
        "wall_s": wall,
    }
    print("memory", json.dumps(results["memory"]), flush=True)
    return results["memory"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small sizes, 1 repeat (smoke run)")
    ap.add_argument("--tiny", action="store_true", help="linear regression only, smallest sizes (the CPU test)")
    args = ap.parse_args()
    args.quick = args.quick or args.tiny
    r = 1 if args.quick else args.repeats
    results: dict[str, Any] = {"device": str(jax.devices()[0]), "jax": jax.__version__}
    ratios: dict[str, float] = {}
    start = time.perf_counter()
    lin = ss.problems.linear_regression(n=512, d=64)
    # The dense d x d diffrax cases are far slower (eigh of a d x d matrix per path-step): they run fewer
    # path-steps and repeats (per path-step times are compared). Digits (d = 4938): 1 path x 1 step, one
    # timed call that includes compilation (seconds, against minutes of eigh work).
    if args.tiny:
        bench_problem("linreg", lin, 4, 4, r, 4, 4, r, results, ratios)
    elif args.quick:
        bench_problem("linreg", lin, 8, 20, r, 8, 20, r, results, ratios)
    else:
        bench_problem("linreg", lin, 128, 200, r, 16, 20, 3, results, ratios)
    if not args.tiny:
        digits = ss.problems.digits_mlp()
        bench_problem(
            "digits",
            digits,
            4 if args.quick else 8,
            5 if args.quick else 10,
            r,
            1,
            1,
            1,
            results,
            ratios,
            dense_warmup=False,
        )
    bench_default_block(results, ratios, r, args.quick)
    bench_runs_block(results, ratios, r, args.quick)
    bench_monte_carlo_drift(results, ratios, r, args.quick)
    if not args.tiny:
        mem = memory_demo(results)
        ratios["memory_peak_rss_over_d_squared_mlp1e5"] = mem["peak_rss_bytes"] / mem["d_squared_float32_bytes"]
    results["total_s"] = time.perf_counter() - start
    print(json.dumps(results))
    print(json.dumps({k: round(v, 4) for k, v in ratios.items()}))


if __name__ == "__main__":
    main()
