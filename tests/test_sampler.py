"""Samplers: frequencies, epochs, reproducibility, and c(b) (DESIGN §1)."""

import itertools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_sam as ss


def _draw(sampler, key, steps, n):
    return np.asarray(jax.vmap(lambda k: sampler.indices(key, k, n))(jnp.arange(steps)))


def test_with_replacement_frequencies_are_uniform():
    """Counts over 4000 x 8 draws from n = 10: each count ~ Binomial(32000, 0.1); tolerance 5 sigma."""
    n, steps, b = 10, 4000, 8
    idx = _draw(ss.WithReplacement(b), jr.key(0), steps, n)
    counts = np.bincount(idx.ravel(), minlength=n)
    expected = steps * b / n
    sigma = np.sqrt(steps * b * (1 / n) * (1 - 1 / n))
    assert np.all(np.abs(counts - expected) < 5 * sigma)
    assert any(len(set(row)) < b for row in idx)  # repeats within a batch do occur with replacement


def test_without_replacement_epochs_are_permutations():
    n, b = 12, 4
    idx = _draw(ss.WithoutReplacement(b), jr.key(1), 9, n)  # 3 epochs of 3 batches
    for epoch in range(3):
        assert sorted(idx[3 * epoch : 3 * epoch + 3].ravel()) == list(range(n))
    assert not np.array_equal(idx[:3], idx[3:6])  # a fresh shuffle each epoch


def test_without_replacement_drops_the_incomplete_batch():
    idx = _draw(ss.WithoutReplacement(5), jr.key(2), 4, 11)  # 2 batches per epoch, 1 example dropped
    assert len(set(idx[:2].ravel())) == 10 and len(set(idx[2:].ravel())) == 10


def test_pair_frequencies_without_replacement():
    """Every unordered pair lands in the same batch equally often (uniform subsets); 5 sigma."""
    n, b, steps = 6, 3, 6000
    idx = _draw(ss.WithoutReplacement(b), jr.key(3), steps, n)
    together = np.zeros((n, n))
    for row in idx:
        for i, j in itertools.combinations(row, 2):
            together[i, j] += 1
            together[j, i] += 1
    p = b * (b - 1) / (n * (n - 1))  # P(i and j in the same batch)
    sigma = np.sqrt(steps * p * (1 - p))
    off = together[~np.eye(n, dtype=bool)]
    assert np.all(np.abs(off - steps * p) < 5 * sigma)


@pytest.mark.parametrize("sampler", [ss.WithReplacement(3), ss.WithoutReplacement(3)])
def test_same_key_same_sequence(sampler):
    a = _draw(sampler, jr.key(4), 20, 9)
    np.testing.assert_array_equal(a, _draw(sampler, jr.key(4), 20, 9))
    assert not np.array_equal(a, _draw(sampler, jr.key(5), 20, 9))


def _brute_force_factor(n, b, replace):
    """Var of the batch mean of a scalar with population variance 1 (Sigma = 1), by enumerating batches."""
    rng = np.random.default_rng(0)
    v = rng.standard_normal(n)
    v = (v - v.mean()) / np.sqrt(np.mean((v - v.mean()) ** 2))
    batches = itertools.product(range(n), repeat=b) if replace else itertools.combinations(range(n), b)
    means = np.array([v[list(bt)].mean() for bt in batches])
    return np.mean(means**2)


@pytest.mark.parametrize("n, b", [(5, 1), (5, 2), (5, 3), (6, 6), (4, 4)])
def test_sampling_factor_matches_enumeration(n, b):
    np.testing.assert_allclose(
        ss.sampling_factor(ss.WithReplacement(b), b, n), _brute_force_factor(n, b, True), atol=1e-12
    )
    np.testing.assert_allclose(
        ss.sampling_factor(ss.WithoutReplacement(b), b, n), _brute_force_factor(n, b, False), atol=1e-12
    )


def test_full_batch_without_replacement_has_no_noise():
    assert ss.WithoutReplacement(8).factor(8, 8) == 0.0


# -- UniformSubset: a fresh uniform subset each step, independent across steps -----------------------------


def test_uniform_subset_batch_covariance_is_c_sigma_by_enumeration():
    """Cov of the batch mean of vectors ``v_i`` over the sampler's enumerated one-step law equals
    ``c(B) Sigma`` (``Sigma`` the population covariance), matrix-valued and exact."""
    rng = np.random.default_rng(1)
    n, b = 7, 3
    v = rng.standard_normal((n, 2))
    sampler = ss.UniformSubset(b)
    dist = ss.sde.batch_distribution(sampler.with_replacement, n, b, dtype=jnp.float32)
    assert dist.exact and dist.indices.shape[0] == 35  # C(7, 3) subsets
    means = np.stack([v[np.asarray(r)].mean(0) for r in dist.indices])
    probs = np.asarray(dist.probs, np.float64)
    centred = means - probs @ means
    cov = (centred * probs[:, None]).T @ centred
    vc = v - v.mean(0)
    sigma = vc.T @ vc / n
    np.testing.assert_allclose(cov, sampler.factor(b, n) * sigma, rtol=1e-6)
    assert sampler.factor(b, n) == (n - b) / (b * (n - 1))


def test_uniform_subset_draws_uniform_subsets():
    """Each of the C(5, 2) = 10 subsets drawn with frequency 1/10 over 5000 steps (binomial, 5 sigma); no repeats
    within a batch."""
    n, b, steps = 5, 2, 5000
    idx = _draw(ss.UniformSubset(b), jr.key(6), steps, n)
    assert all(len(set(row)) == b for row in idx)
    counts = {}
    for row in idx:
        counts[tuple(sorted(row))] = counts.get(tuple(sorted(row)), 0) + 1
    assert len(counts) == 10
    p = 0.1
    sigma = np.sqrt(steps * p * (1 - p))
    assert all(abs(c - steps * p) < 5 * sigma for c in counts.values()), counts


def test_uniform_subset_steps_are_independent_unlike_epochs():
    """Consecutive batches share on average ``B^2 / n`` examples when independent; within a shuffled epoch they
    share none. 4000 pairs, n = 8, B = 4: mean overlap 2, sd of one overlap <= 1, tolerance 5 s.e."""
    n, b, steps = 8, 4, 4000
    idx = _draw(ss.UniformSubset(b), jr.key(7), steps + 1, n)
    overlap = np.array([len(set(idx[k]) & set(idx[k + 1])) for k in range(steps)])
    se = overlap.std(ddof=1) / np.sqrt(steps)
    assert abs(overlap.mean() - b * b / n) < 5 * se, (overlap.mean(), se)
    epochs = _draw(ss.WithoutReplacement(b), jr.key(7), 2, n)  # the two batches of one epoch
    assert not set(epochs[0]) & set(epochs[1])


def test_uniform_subset_bad_input_and_reproducibility():
    with pytest.raises(ValueError, match="batch_size"):
        ss.UniformSubset(0)
    with pytest.raises(ValueError, match="batch_size"):
        ss.UniformSubset(9).check(8)
    a = _draw(ss.UniformSubset(3), jr.key(8), 10, 9)
    np.testing.assert_array_equal(a, _draw(ss.UniformSubset(3), jr.key(8), 10, 9))
    with pytest.raises(TypeError, match="sampler"):
        ss.sampling_factor("uniform", 2, 5)  # pyright: ignore[reportArgumentType]
