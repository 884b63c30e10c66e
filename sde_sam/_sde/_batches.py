"""Exact or Monte Carlo expectations over the batch distribution of a sampler (DESIGN §1, §3).

A batch of size ``s`` is a uniform size-``s`` subset (``WithoutReplacement``) or ``s`` i.i.d. uniform
indices (``WithReplacement``). When the support is small (``C(n, s)`` subsets, ``C(n+s-1, s)``
multisets) it is enumerated with exact probabilities; otherwise ``num_samples`` batches are drawn and
the expectation carries a Monte Carlo standard error.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from .._checks import check_integer

#: Enumerate the batch distribution exactly when its support has at most this many batches.
MAX_ENUMERATION = 4096
#: Monte Carlo batches when the support is larger.
NUM_SAMPLES = 256
#: Batches evaluated at once (vmap) inside the expectation loop.
CHUNK = 64


@dataclasses.dataclass(frozen=True)
class BatchDistribution:
    """``indices[r]`` (a batch of size ``s``) with probability ``probs[r]``; ``exact`` when enumerated."""

    indices: Int[Array, "N s"]
    probs: Float[Array, " N"]
    exact: bool


def check_spread(name: str, value: int) -> int:
    """A Monte Carlo size ``value`` (already a positive integer) of at least 2, as an ``int``: one batch has no
    spread, so no standard error."""
    if value < 2:
        raise ValueError(f"`{name}` must be at least 2 (one Monte Carlo batch has no spread), got {value}")
    return int(value)


def support_size(with_replacement: bool, n: int, size: int) -> int:
    """Number of distinct batches: ``C(n + size - 1, size)`` multisets or ``C(n, size)`` subsets."""
    return math.comb(n + size - 1, size) if with_replacement else math.comb(n, size)


def batch_distribution(
    with_replacement: bool,
    n: int,
    size: int,
    *,
    key: PRNGKeyArray | None = None,
    num_samples: int = NUM_SAMPLES,
    max_enumeration: int = MAX_ENUMERATION,
    force_monte_carlo: bool = False,
    dtype=jnp.float32,
) -> BatchDistribution:
    """The distribution of one size-``size`` batch from ``n`` examples (with or without replacement).

    Exact (enumerated) when its support has at most ``max_enumeration`` batches and
    ``force_monte_carlo`` is false; otherwise ``num_samples`` i.i.d. draws with weights ``1/num_samples``
    (``key`` required; ``None`` means the fixed ``jr.key(0)``, i.e. common random numbers).
    """
    check_integer("num_samples", num_samples)
    check_spread("num_samples", num_samples)
    check_integer("max_enumeration", max_enumeration)
    if not with_replacement and size > n:
        raise ValueError(f"batch size {size} exceeds n={n}: without replacement it must be in [1, {n}]")
    count = support_size(with_replacement, n, size)
    if count <= max_enumeration and not force_monte_carlo:
        if with_replacement:
            rows = np.array(list(itertools.combinations_with_replacement(range(n), size)), dtype=np.int32)
            counts = np.stack([np.bincount(r, minlength=n) for r in rows])
            logp = math.lgamma(size + 1) - np.sum([[math.lgamma(c + 1) for c in row] for row in counts], axis=1)
            probs = np.exp(logp - size * math.log(n))
        else:
            rows = np.array(list(itertools.combinations(range(n), size)), dtype=np.int32)
            probs = np.full(len(rows), 1.0 / count)
        return BatchDistribution(jnp.asarray(rows), jnp.asarray(probs, dtype), True)
    key = jr.key(0) if key is None else key
    keys = jr.split(key, num_samples)
    if with_replacement:
        rows = jax.vmap(lambda k: jr.randint(k, (size,), 0, n))(keys)
    else:
        rows = jax.vmap(lambda k: uniform_subset(k, n, size))(keys)
    return BatchDistribution(rows.astype(jnp.int32), jnp.full((num_samples,), 1.0 / num_samples, dtype), False)


#: Largest subset drawn by Floyd's algorithm (``O(size^2)``); larger ones take a prefix of a permutation.
FLOYD_MAX = 64


def uniform_subset(key: PRNGKeyArray, n: int, size: int) -> Int[Array, " size"]:
    """A uniformly random size-``size`` subset of ``range(n)`` in uniformly random order.

    Floyd's algorithm (Bentley & Floyd, CACM 1987: for ``j = n - size, ..., n - 1`` draw ``t`` in ``[0, j]``
    and keep ``j`` if ``t`` was already kept, else ``t``), then a shuffle of the ``size`` kept indices: ``O(size^2)``
    work instead of the ``O(n log n)`` of a permutation of ``range(n)``, which dominated a Monte Carlo drift
    with small micro-batches (docs/sde.md). Sizes above
    :data:`FLOYD_MAX` take the first ``size`` entries of ``jr.permutation(key, n)``.
    """
    if size > FLOYD_MAX:
        return jr.permutation(key, n)[:size].astype(jnp.int32)
    keys = jr.split(key, size + 1)

    def body(i, kept):
        j = n - size + i
        t = jr.randint(keys[i], (), 0, j + 1, dtype=jnp.int32)
        return kept.at[i].set(jnp.where(jnp.any(kept == t), j, t))

    kept = jax.lax.fori_loop(0, size, body, jnp.full((size,), -1, jnp.int32))
    return jr.permutation(keys[size], kept)


def expectation(fn, dist: BatchDistribution, key: PRNGKeyArray | None = None, chunk: int = CHUNK):
    """``(E[fn(batch_indices, key_r)], stderr)`` over ``dist``, accumulated chunk by chunk (memory ``chunk * d``).

    ``fn(indices, key) -> pytree``; row ``r`` gets ``jr.fold_in(key, r)``. ``stderr`` is zero when ``dist``
    is exact and ``std(ddof=1) / sqrt(N)`` (leafwise) for Monte Carlo. The variance is formed stably: two
    passes within each chunk (its mean, then the squared deviations from it) and Chan et al.'s pairwise
    merge across chunks, never ``E[v^2] - E[v]^2`` (which loses every digit in float32 when the spread is
    small against the mean).
    """
    key = jr.key(0) if key is None else key
    num = dist.indices.shape[0]
    chunk = min(chunk, num)
    pad = (-num) % chunk
    idx = jnp.concatenate([dist.indices, jnp.zeros((pad, dist.indices.shape[1]), dist.indices.dtype)])
    probs = jnp.concatenate([dist.probs, jnp.zeros((pad,), dist.probs.dtype)])
    real = jnp.concatenate([jnp.ones((num,), dist.probs.dtype), jnp.zeros((pad,), dist.probs.dtype)])
    rows = jnp.arange(num + pad)
    shape = (-1, chunk)
    xs = (idx.reshape(*shape, idx.shape[1]), probs.reshape(shape), real.reshape(shape), rows.reshape(shape))
    sample_fn = jax.vmap(lambda i, r: fn(i, jr.fold_in(key, r)))
    out_shape = jax.eval_shape(lambda: fn(dist.indices[0], key))
    zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape)
    wsum = lambda v, q: jnp.tensordot(q.astype(v.dtype), v, axes=1)  # noqa: E731

    def body(carry, x):
        s1, count, mean, m2 = carry
        i, p, w, r = x
        vals = sample_fn(i, r)
        s1 = jax.tree_util.tree_map(lambda acc, v: acc + wsum(v, p), s1, vals)
        if dist.exact:
            return (s1, count, mean, m2), None
        # Chunk statistics by two passes over the real (unpadded) rows, then Chan's merge into the running ones.
        nb = jnp.sum(w)
        new_count = count + nb
        frac = nb / jnp.maximum(new_count, 1.0)

        chunk_mean = jax.tree_util.tree_map(lambda v: wsum(v, w) / jnp.maximum(nb, 1.0).astype(v.dtype), vals)
        delta = jax.tree_util.tree_map(jnp.subtract, chunk_mean, mean)
        m2 = jax.tree_util.tree_map(
            lambda acc, v, mb, dl: (
                acc + wsum(jnp.square(v - mb[None]), w) + jnp.square(dl) * (count * frac).astype(v.dtype)
            ),
            m2,
            vals,
            chunk_mean,
            delta,
        )
        mean = jax.tree_util.tree_map(lambda mu, dl: mu + dl * frac.astype(dl.dtype), mean, delta)
        return (s1, new_count, mean, m2), None

    count0 = jnp.zeros((), dist.probs.dtype)
    (mean, _, _, m2), _ = jax.lax.scan(body, (zeros, count0, zeros, zeros), xs)
    if dist.exact or num < 2:
        return mean, zeros
    stderr = jax.tree_util.tree_map(lambda a: jnp.sqrt(jnp.maximum(a, 0.0) / ((num - 1) * num)), m2)
    return mean, stderr


def tree_weighted_sum(weights: Float[Array, " N"], stacked: PyTree) -> PyTree:
    """``sum_r weights[r] * stacked[r]`` leafwise."""
    return jax.tree_util.tree_map(lambda v: jnp.tensordot(weights.astype(v.dtype), v, axes=1), stacked)
