"""Discrete runner: reproducibility, vmap vs loop, recording, divergence, optional float64."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import float64, user_problem

import sde_sam as ss


def _run(problem, variant, key, num_runs=None, steps=20, every=5, sampler=None, **kw):
    return ss.run_discrete(
        problem,
        variant,
        sampler or ss.WithoutReplacement(4),
        eta=0.05,
        steps=steps,
        num_runs=num_runs,
        key=key,
        record=ss.observables("loss", "param_norm_sq", "grad_norm_sq", every=every),
        **kw,
    )


def test_same_key_gives_bit_identical_runs():
    problem = user_problem()
    a = _run(problem, ss.variants.m_sam(0.1, 2), jr.key(7), num_runs=3)
    b = _run(problem, ss.variants.m_sam(0.1, 2), jr.key(7), num_runs=3)
    for name in a.values:
        np.testing.assert_array_equal(a.values[name], b.values[name])
    c = _run(problem, ss.variants.m_sam(0.1, 2), jr.key(8))
    assert not np.array_equal(a.values["loss"], c.values["loss"])


def test_vmap_over_runs_equals_a_loop_over_runs():
    problem = user_problem()
    keys = jr.split(jr.key(1), 3)
    together = _run(problem, ss.variants.rw_sam(0.1), keys)
    for r in range(3):
        alone = _run(problem, ss.variants.rw_sam(0.1), keys[r : r + 1])
        for name in together.values:
            # float32: vmap may reorder reductions, so equality is to float tolerance
            np.testing.assert_allclose(together.values[name][r], alone.values[name][0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", [ss.variants.sam(0.1), ss.variants.rw_sam(0.1)], ids=["SAM", "RW-SAM"])
def test_records_match_a_direct_replay_of_the_steps(variant):
    """The recorded loss at step k equals f(x_k) from a Python replay of the same batches and keys (RW-SAM draws
    its probe from the step key ``fold_in(variant_key, k)``, which the runner derives per segment)."""
    problem = user_problem()
    sampler = ss.WithReplacement(4)
    key = jr.key(3)
    runs = _run(problem, variant, key[None], num_runs=1, steps=10, every=5, sampler=sampler)
    sample_key, variant_key = jr.split(key)
    x, state = problem.init_params, variant.init(problem.init_params)
    losses = [float(problem.full_loss(x))]
    for k in range(10):
        batch = problem.take(sampler.indices(sample_key, k, problem.num_examples))
        G, state, _ = variant.gradient(problem, x, state, batch, jr.fold_in(variant_key, k))
        x = jax.tree_util.tree_map(lambda p, g: p - 0.05 * g, x, G)
        losses.append(float(problem.full_loss(x)))
    np.testing.assert_allclose(runs.values["loss"][0], np.array(losses)[[0, 5, 10]], rtol=1e-5)
    np.testing.assert_array_equal(runs.steps, [0, 5, 10])
    np.testing.assert_allclose(runs.times, [0.0, 0.25, 0.5])


def test_custom_observable_and_accuracy():
    problem = ss.problems.breast_cancer_logistic()
    runs = ss.run_discrete(
        problem,
        ss.variants.sam(0.05),
        ss.WithoutReplacement(32),
        eta=0.1,
        steps=40,
        num_runs=2,
        key=jr.key(0),
        record=ss.observables("accuracy", "test_accuracy", bias_sq=lambda pr, x: x["b"] ** 2, every=20),
    )
    assert runs.values["accuracy"].shape == (2, 3)
    assert runs.mean("accuracy")[-1] > 0.9  # logistic regression separates breast_cancer well
    assert runs.values["bias_sq"][0, 0] == 0.0


def test_divergence_is_counted_and_never_averaged():
    problem = ss.problems.quadratic(spectrum=(10.0, 1.0), n=8)
    runs = ss.run_discrete(
        problem,
        ss.variants.sgd(),
        ss.WithReplacement(2),
        eta=0.5,
        steps=100,
        num_runs=4,
        key=jr.key(0),
        record=ss.observables("loss", every=10),
        divergence_threshold=1e6,
    )
    assert runs.num_diverged == 4  # eta * 10 = 5 > 2: every run blows up
    assert np.all(runs.diverged_step > 0)
    with pytest.raises(ValueError, match="all 4 runs diverged"):
        runs.mean("loss")
    stable = ss.run_discrete(
        problem,
        ss.variants.sgd(),
        ss.WithReplacement(2),
        eta=0.05,
        steps=100,
        num_runs=4,
        key=jr.key(0),
        record=ss.observables("loss", every=10),
    )
    assert stable.num_diverged == 0 and np.all(np.isfinite(stable.mean("loss")))


def test_mixed_divergence_excludes_diverged_runs_from_the_mean():
    problem = ss.problems.quadratic(spectrum=(1.0,), n=8, noise_scale=3.0)
    runs = ss.run_discrete(
        problem,
        ss.variants.sgd(),
        ss.WithReplacement(1),
        eta=0.1,
        steps=50,
        num_runs=64,
        key=jr.key(0),
        record=ss.observables("param_norm_sq", every=10),
        divergence_threshold=4.0,
    )
    assert 0 < runs.num_diverged < 64
    mean = runs.mean("param_norm_sq")
    assert np.all(np.isfinite(mean)) and np.all(mean <= 4.0)
    assert np.all(np.isnan(runs.values["param_norm_sq"][runs.diverged, -1]))


def test_float64_on_request():
    problem = user_problem()
    with pytest.raises(ValueError, match="jax_enable_x64"):
        if not jax.config.jax_enable_x64:  # pyright: ignore[reportAttributeAccessIssue]
            _run(problem, ss.variants.sam(0.1), jr.key(0), dtype=jnp.float64)
        else:
            raise ValueError("jax_enable_x64 already on")
    with float64():
        runs = _run(problem, ss.variants.sam(0.1), jr.key(0), dtype=jnp.float64)
        assert runs.values["loss"].dtype == np.float64
    assert _run(problem, ss.variants.sam(0.1), jr.key(0)).values["loss"].dtype == np.float32


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_every_variant_runs_on_the_user_problem():
    problem = user_problem()
    for name in ss.variants.NAMES:
        kwargs = {} if name == "sgd" else {"rho": 0.05}
        if name.startswith("m-"):
            kwargs["micro_batch_size"] = 2
        if name in ("sam-on", "asam-on"):
            kwargs["mask"] = lambda path: path == "offset"  # the NamedTuple field  # pyright: ignore[reportArgumentType]
        runs = _run(problem, ss.variants.get(name, **kwargs), jr.key(0), num_runs=2, steps=10)
        assert runs.num_diverged == 0 and np.all(np.isfinite(runs.mean("loss"))), name
