"""Expectations over batch distributions (DESIGN §3): the Monte Carlo standard error is formed stably."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import sde_sam as ss


def test_monte_carlo_stderr_is_stable_in_float32():
    """Values with mean 100 and spread 1e-3 in float32: the one-pass ``E[v^2] - E[v]^2`` loses every digit of the
    variance (the squares are ~1e4 with float32 spacing ~1e-3, so the difference is rounding noise and the
    stderr came out tens of times too large); the chunked two-pass/Chan merge matches the float64 two-pass
    reference to 1 %."""
    num = 1000
    values = jnp.asarray(100.0 + 1e-3 * np.random.default_rng(0).standard_normal(num), jnp.float32)
    dist = ss.sde.BatchDistribution(
        jnp.arange(num, dtype=jnp.int32)[:, None], jnp.full((num,), 1.0 / num, jnp.float32), False
    )
    mean, err = ss.sde.expectation(lambda idx, key: {"v": values[idx[0]]}, dist, jr.key(0), chunk=64)
    ref = np.asarray(values, np.float64)
    want = ref.std(ddof=1) / np.sqrt(num)
    np.testing.assert_allclose(float(err["v"]), want, rtol=1e-2)
    np.testing.assert_allclose(float(mean["v"]), ref.mean(), rtol=1e-6)
    # the one-pass formula on the same float32 values is far off (what this test guards against)
    naive = np.sqrt(max(float(jnp.mean(values**2) - jnp.mean(values) ** 2), 0.0) / (num - 1))
    assert abs(naive - want) > 5 * want or naive == 0.0


def test_stderr_with_a_ragged_last_chunk_matches_numpy():
    """Chunks of 64 over 150 rows (the last one padded): stderr equals numpy's ``std(ddof=1)/sqrt(N)``."""
    num = 150
    values = jnp.asarray(np.random.default_rng(1).standard_normal((num, 3)), jnp.float32)
    dist = ss.sde.BatchDistribution(
        jnp.arange(num, dtype=jnp.int32)[:, None], jnp.full((num,), 1.0 / num, jnp.float32), False
    )
    mean, err = ss.sde.expectation(lambda idx, key: values[idx[0]], dist, jr.key(0), chunk=64)
    ref = np.asarray(values, np.float64)
    np.testing.assert_allclose(np.asarray(mean), ref.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(err), ref.std(0, ddof=1) / np.sqrt(num), rtol=1e-4)


def test_uniform_subset_is_uniform_over_subsets_and_orders():
    """n = 5, size = 2 (Floyd's algorithm) and size = 3: 40,000 draws. Each subset has probability 1/C(5, s) and
    each ordered tuple 1/(5 * 4 ...); the counts are compared with a chi-square bound at p = 1e-4 (fixed
    seed), which an order-biased draw (Floyd without the final shuffle puts ``j`` last) fails by far."""
    from itertools import permutations

    from scipy import stats

    from sde_sam._sde._batches import uniform_subset

    num = 40_000
    for size in (2, 3):
        rows = np.asarray(jax.vmap(lambda k: uniform_subset(k, 5, size))(jr.split(jr.key(7), num)))
        assert rows.shape == (num, size) and all(len(set(r)) == size for r in rows[:2000])
        assert rows.min() >= 0 and rows.max() <= 4
        tuples = list(permutations(range(5), size))
        counts = np.array([np.sum(np.all(rows == np.array(t), axis=1)) for t in tuples])
        expected = num / len(tuples)
        chi2 = np.sum((counts - expected) ** 2 / expected)
        assert chi2 < stats.chi2.ppf(1 - 1e-4, len(tuples) - 1), (size, chi2)
    big = np.asarray(uniform_subset(jr.key(0), 300, 100))  # above FLOYD_MAX: a permutation prefix
    assert big.shape == (100,) and len(set(big.tolist())) == 100
