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

import jax
import jax.numpy as jnp
import jax.random as jr
from jax.flatten_util import ravel_pytree

import sde_sam as ss


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
                k1, k2 = ss.sde.step_keys(key, j)
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
        return jax.vmap(lambda x, key: ss.sde.em_step(model, x, key, j, model.eta))(xs, keys)

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
            terms = diffrax.MultiTerm(diffrax.ODETerm(drift),
                                      diffrax.ControlTerm(diffusion_dense if dense else diffusion_nd, bm))
            sol = diffrax.diffeqsolve(terms, diffrax.Euler(), 0.0, eta * steps, eta, flat0,
                                      saveat=diffrax.SaveAt(t1=True), max_steps=steps,
                                      adjoint=diffrax.ForwardMode())
            return sol.ys

        return jax.vmap(one)(keys)

    keys = jr.split(jr.key(0), paths)
    return lambda: run(keys)


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


def bench_problem(tag, problem, paths, steps, repeats, dense_paths, dense_steps, dense_repeats, results, ratios,
                  dense_warmup=True):
    model = make_model(problem)
    ps = paths * steps
    fns = dict(ours=ours(model, paths, steps), bare=bare(model, paths, steps),
               python_loop=python_loop(model, paths, steps), diffrax_best=diffrax_run(model, paths, steps, dense=False))
    t = {k: v / ps for k, v in interleaved(fns, repeats).items()}
    t["diffrax_dense"] = timed(diffrax_run(model, dense_paths, dense_steps, dense=True), dense_repeats,
                               dense_warmup) / (dense_paths * dense_steps)
    results[tag] = dict(d=problem.dim, n=problem.num_examples, paths=paths, steps=steps, repeats=repeats,
                        dense_paths=dense_paths, dense_steps=dense_steps, dense_repeats=dense_repeats,
                        dense_includes_compile=not dense_warmup,
                        us_per_path_step={k: 1e6 * v for k, v in t.items()})
    ratios[f"ours_vs_diffrax_dense_{tag}"] = t["diffrax_dense"] / t["ours"]
    ratios[f"ours_vs_diffrax_best_{tag}"] = t["diffrax_best"] / t["ours"]
    ratios[f"ours_vs_python_loop_{tag}"] = t["python_loop"] / t["ours"]
    ratios[f"ours_over_bare_{tag}"] = t["ours"] / t["bare"]
    print(tag, json.dumps(results[tag]), flush=True)


def memory_demo(results, hidden=(300, 256), paths=4, steps=10):
    """A ~1e5-parameter MLP: compiled peak temporary memory and process peak RSS vs ``d^2`` floats."""
    from sde_sam._sde._simulate import _simulate_jit

    problem = ss.problems.digits_mlp(hidden=hidden)
    model = make_model(problem)
    rec = ss.observables("loss", every=steps)
    keys = jr.split(jr.key(0), paths)
    compiled = _simulate_jit.lower(model, problem.init_params, keys, 1, steps, model.eta, rec, False, 1e12,
                                   paths).compile()
    mem = compiled.memory_analysis()
    t = time.perf_counter()
    out = ss.simulate(model, t1=model.eta * steps, num_paths=paths, key=jr.key(0), record=rec)
    wall = time.perf_counter() - t
    d = problem.dim
    results["memory"] = dict(
        d=d, paths=paths, steps=steps, finite=bool(out.num_diverged == 0),
        temp_bytes=int(mem.temp_size_in_bytes), argument_bytes=int(mem.argument_size_in_bytes),
        output_bytes=int(mem.output_size_in_bytes), peak_rss_bytes=int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
        d_squared_float32_bytes=4 * d * d, wall_s=wall,
    )
    print("memory", json.dumps(results["memory"]), flush=True)
    return results["memory"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (smoke run)")
    args = ap.parse_args()
    r = 1 if args.quick else args.repeats
    results, ratios = {"device": str(jax.devices()[0]), "jax": jax.__version__}, {}
    start = time.perf_counter()
    lin = ss.problems.linear_regression(n=512, d=64)
    # The dense d x d diffrax cases are far slower (eigh of a d x d matrix per path-step): they run fewer
    # path-steps and repeats (per path-step times are compared). Digits (d = 4938): 1 path x 1 step, one
    # timed call that includes compilation (seconds, against minutes of eigh work).
    if args.quick:
        bench_problem("linreg", lin, 8, 20, r, 8, 20, r, results, ratios)
    else:
        bench_problem("linreg", lin, 128, 200, r, 16, 20, 3, results, ratios)
    digits = ss.problems.digits_mlp()
    bench_problem("digits", digits, 4 if args.quick else 8, 5 if args.quick else 10, r, 1, 1, 1, results, ratios,
                  dense_warmup=False)
    mem = memory_demo(results)
    ratios["memory_peak_rss_over_d_squared_mlp1e5"] = mem["peak_rss_bytes"] / mem["d_squared_float32_bytes"]
    results["total_s"] = time.perf_counter() - start
    print(json.dumps(results))
    print(json.dumps({k: round(v, 4) for k, v in ratios.items()}))


if __name__ == "__main__":
    main()
