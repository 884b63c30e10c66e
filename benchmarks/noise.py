"""Benchmark of the noise and curvature estimators (DESIGN §4).

1. ``tr Sigma`` on the digits MLP (``ss.problems.digits_mlp()``, n = 1438, d = 4938, float32):
   ``ss.noise.trace_sigma`` (chunked per-example gradients) against a Python loop over examples (one jitted
   ``grad`` per example) and against a dense computation (the ``n x d`` matrix by one unchunked ``vmap(grad)``,
   then the ``d x d`` covariance). Peak working memory of the compiled estimator with and without chunking
   (XLA's ``temp_size_in_bytes``).
2. ``lambda_max(H)`` by Lanczos (``ss.curvature.top_eigenvalues``) against a dense Hessian + ``eigh`` on
   ``digits_mlp(hidden=16)`` (d = 1242; the dense Hessian of the d = 4938 model needs ~2 GB of tangents).
3. ``lambda_max`` recorded every 50 steps of a SAM run on the digits MLP against the same run recording the loss
   only (target: at most 2x).

Medians of ``--repeats`` (default 5) timed runs after one warm-up; the last line printed is one JSON object.
Run: ``PYTHONPATH=. python benchmarks/noise.py``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.flatten_util import ravel_pytree

import sde_sam as ss
from sde_sam._estimators._noise import _moments


def _memory(compiled):
    """The compiled program's memory analysis (every backend this benchmark runs on reports one)."""
    mem = compiled.memory_analysis()
    assert mem is not None, "this backend reports no memory analysis"
    return mem


def _median_time(fn, repeats):
    jax.block_until_ready(fn())  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=(__doc__ or "").partition("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chunk-size", type=int, default=128)
    args = ap.parse_args(argv)
    r = args.repeats

    # -- 1. tr Sigma on the digits MLP ---------------------------------------------------------------
    pr = ss.problems.digits_mlp()
    x = pr.init_params
    n, d = pr.num_examples, pr.dim
    print(f"digits_mlp: n={n}, d={d}, float32, {jax.device_count()} {jax.devices()[0].platform} device(s)")

    ours = lambda: ss.noise.trace_sigma(pr, x, chunk_size=args.chunk_size)  # noqa: E731
    t_ours = _median_time(ours, r)
    value = float(ours())

    grad_one = jax.jit(jax.grad(pr.loss_fn))
    examples = [jax.tree_util.tree_map(lambda a, i=i: a[i], pr.data) for i in range(n)]

    def loop():
        sq, total = 0.0, np.zeros(pr.dim)
        for ex in examples:
            gi = np.asarray(ravel_pytree(grad_one(x, ex))[0], np.float64)
            sq += gi @ gi
            total = total + gi
        return jnp.asarray(sq / n - (total / n) @ (total / n))

    t_loop = _median_time(loop, r)
    value_loop = float(loop())

    @jax.jit
    def dense(params):
        G = ss.noise.per_example_grads(pr, params, flat=True)  # (n, d), unchunked
        return jnp.trace(jnp.cov(G.T, bias=True))  # the d x d covariance

    t_dense = _median_time(lambda: dense(x), r)
    value_dense = float(dense(x))

    def temp_bytes(chunk_size):
        compiled = _moments.lower(pr, x, pr.data, chunk_size=chunk_size).compile()
        return int(_memory(compiled).temp_size_in_bytes)

    mem_chunked, mem_unchunked = temp_bytes(args.chunk_size), temp_bytes(None)
    mem_dense = int(_memory(dense.lower(x).compile()).temp_size_in_bytes)
    print(
        f"tr Sigma: ours {value:.6g} ({t_ours * 1e3:.1f} ms, chunk {args.chunk_size}), loop {value_loop:.6g} "
        f"({t_loop * 1e3:.1f} ms), dense {value_dense:.6g} ({t_dense * 1e3:.1f} ms)"
    )
    print(
        f"working memory: chunked {mem_chunked / 2**20:.2f} MiB, unchunked {mem_unchunked / 2**20:.2f} MiB, "
        f"dense covariance {mem_dense / 2**20:.2f} MiB"
    )

    # -- 2. Lanczos lambda_max against dense eigh --------------------------------------------------------
    small = ss.problems.digits_mlp(hidden=16)
    xs = small.init_params
    flat, unravel = small.ravel(xs)

    def lanczos():
        return ss.curvature.top_eigenvalues(small, xs, 1, jr.key(0), num_matvecs=40).values[0]

    @jax.jit
    def dense_eig(f):
        h = jax.hessian(lambda u: small.full_loss(unravel(u)))(f)
        return jnp.linalg.eigvalsh(0.5 * (h + h.T))[-1]

    t_lanczos = _median_time(lanczos, r)
    t_eigh = _median_time(lambda: dense_eig(flat), r)
    lam_l, lam_d = float(lanczos()), float(dense_eig(flat))
    print(
        f"lambda_max(H), digits_mlp(hidden=16), d={small.dim}: "
        f"Lanczos(40 HVPs) {lam_l:.6g} ({t_lanczos * 1e3:.1f} ms), "
        f"dense hessian+eigh {lam_d:.6g} ({t_eigh * 1e3:.1f} ms), rel. diff {abs(lam_l - lam_d) / abs(lam_d):.2e}"
    )

    # -- 3. lambda_max recorded along a run: every 50 steps against an unrecorded run -----------------------
    # SAM on the digits MLP (d = 4938), B = 64, 4 runs of 200 steps; "unrecorded" records the loss only. The two
    # calls alternate, each timed after its compiling run; the ratio is the median of the per-round ratios.
    variant, sampler = ss.variants.sam(0.05), ss.WithoutReplacement(64)

    def run(record):
        out = ss.run_discrete(
            pr, variant, sampler, eta=0.05, steps=200, num_runs=4, key=jr.key(0), record=record, progress=False
        )
        return out.values

    from sde_sam.quantities import LambdaMax

    plain = ss.observables("loss", every=50)
    with_lm = ss.observables("loss", "lambda_max", every=50)  # cold: 20 products at every point
    with_warm = ss.observables("loss", lambda_max=LambdaMax(warm_matvecs=4), every=50)  # 20, then 4 warm-started
    for record in (plain, with_lm, with_warm):  # compile each before timing
        run(record)
    cold_rounds, warm_rounds = [], []
    for _ in range(r):
        t0 = time.perf_counter()
        run(plain)
        t1 = time.perf_counter()
        run(with_lm)
        t2 = time.perf_counter()
        run(with_warm)
        t3 = time.perf_counter()
        cold_rounds.append((t2 - t1) / (t1 - t0))
        warm_rounds.append((t3 - t2) / (t1 - t0))
    lm_ratio, warm_ratio = statistics.median(cold_rounds), statistics.median(warm_rounds)
    print(
        f"lambda_max recorded every 50 steps (SAM, digits MLP, 4 runs x 200 steps), against the run recording "
        f"the loss only (median of {r} alternating rounds): {lm_ratio:.2f}x cold (20 products per point), "
        f"{warm_ratio:.2f}x warm-started (4 products after the first point)"
    )

    ratios = {
        "ours_vs_python_loop_trace_sigma_digits": t_loop / t_ours,
        "ours_vs_dense_cov_trace_sigma_digits": t_dense / t_ours,
        "trace_sigma_rel_diff_vs_loop_float64": abs(value - value_loop) / abs(value_loop),
        "memory_unchunked_vs_chunked_trace_sigma_digits": mem_unchunked / mem_chunked,
        "memory_dense_cov_vs_chunked_trace_sigma_digits": mem_dense / mem_chunked,
        "lanczos_vs_dense_eigh_lambda_max_digits16": t_eigh / t_lanczos,
        "lanczos_lambda_max_rel_diff_digits16": abs(lam_l - lam_d) / abs(lam_d),
        "lambda_max_every_50_vs_unrecorded_sam_digits": lm_ratio,
        "lambda_max_warm_every_50_vs_unrecorded_sam_digits": warm_ratio,
    }
    print(json.dumps(ratios))


if __name__ == "__main__":
    main()
