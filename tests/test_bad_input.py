"""Bad input gets a ValueError/TypeError naming the argument and its valid range: one test per case."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import user_problem

import sde_sam as ss
from sde_sam import variants as V


def _run(problem=None, variant=None, sampler=None, **kw):
    args = {"eta": 0.1, "steps": 4, "key": jr.key(0), "record": ss.observables("loss")}
    args.update(kw)
    return ss.run_discrete(problem or user_problem(), variant or V.sam(0.1), sampler or ss.WithReplacement(4), **args)


def test_negative_rho():
    with pytest.raises(ValueError, match=r"`rho` must be a finite number in \[0, inf\)"):
        V.sam(-0.1)


def test_nonpositive_eta():
    with pytest.raises(ValueError, match=r"`eta` must be a finite number in \(0, inf\)"):
        _run(eta=0.0)


def test_micro_batch_size_not_dividing_batch():
    with pytest.raises(ValueError, match=r"`micro_batch_size`=3 must divide the batch size B=4"):
        _run(variant=V.m_sam(0.1, 3))


def test_batch_larger_than_n_without_replacement():
    with pytest.raises(ValueError, match=r"`batch_size`=13 exceeds the number of examples n=12.*\[1, 12\]"):
        _run(sampler=ss.WithoutReplacement(13))


def test_unknown_variant_name():
    with pytest.raises(ValueError, match="unknown variant 'ssam'; valid names: sgd, usam, sam"):
        V.get("ssam", rho=0.1)


def test_inverse_temperature_out_of_range():
    with pytest.raises(ValueError, match=r"`inverse_temperature` must be a finite number in \[0, inf\)"):
        V.rw_sam(0.1, inverse_temperature=-1.0)


def test_fd_delta_out_of_range():
    with pytest.raises(ValueError, match=r"`fd_delta` must be a finite number in \(0, inf\)"):
        V.rw_sam(0.1, fd_delta=0.0)


def test_sigma_out_of_range():
    with pytest.raises(ValueError, match=r"`sigma` must be a finite number in \[0, 1\]"):
        V.f_sam(0.1, sigma=1.5)


def test_ema_decay_out_of_range():
    with pytest.raises(ValueError, match=r"`ema_decay` must be a finite number in \[0, 1\)"):
        V.f_sam(0.1, ema_decay=1.0)


def test_nan_in_data():
    with pytest.raises(ValueError, match=r"`data` contains 1 non-finite value"):
        ss.Problem(lambda p, ex: jnp.sum(p * ex), jnp.array([[1.0], [jnp.nan]]), jnp.zeros(1))


def test_inf_in_initial_point():
    with pytest.raises(ValueError, match=r"`init_params` contains 1 non-finite value"):
        ss.Problem(lambda p, ex: jnp.sum(p * ex), jnp.ones((3, 2)), jnp.array([0.0, jnp.inf]))


def test_mismatched_pytrees():
    problem = user_problem()
    with pytest.raises(ValueError, match="`init_params` has pytree structure"):
        _run(problem, init_params={"weight": jnp.zeros(3)})


def test_mismatched_leaf_shapes():
    problem = user_problem()
    bad = problem.init_params._replace(weight=jnp.zeros(5))
    with pytest.raises(ValueError, match=r"`init_params` has a leaf of shape \(5,\), expected \(3,\)"):
        _run(problem, init_params=bad)


def test_data_leaves_disagree_on_n():
    with pytest.raises(ValueError, match="leaves of `data` disagree on the number of examples"):
        ss.Problem(lambda p, ex: p * ex["a"] * ex["b"], {"a": jnp.ones(3), "b": jnp.ones(4)}, jnp.zeros(()))


def test_empty_dataset():
    with pytest.raises(ValueError, match="`data` is empty: it has 0 examples"):
        ss.Problem(lambda p, ex: jnp.sum(p * ex), jnp.ones((0, 2)), jnp.zeros(2))


def test_loss_fn_not_scalar():
    with pytest.raises(TypeError, match="`loss_fn` must return a scalar per example"):
        ss.Problem(lambda p, ex: p * ex, jnp.ones((3, 2)), jnp.zeros(2))


def test_nonpositive_batch_size():
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        ss.WithReplacement(0)


def test_unknown_observable():
    with pytest.raises(ValueError, match=r"unknown observable\(s\) \['lost'\]"):
        ss.observables("lost")


def test_observable_the_problem_cannot_support():
    with pytest.raises(ValueError, match="observable 'accuracy' is not available"):
        _run(record=ss.observables("accuracy"))


def test_steps_not_multiple_of_every():
    with pytest.raises(ValueError, match=r"`steps`=5 must be a multiple of record.every=2"):
        _run(steps=5, record=ss.observables("loss", every=2))


def test_nonpositive_steps_and_runs():
    with pytest.raises(ValueError, match="`steps` must be a positive integer"):
        _run(steps=0)
    with pytest.raises(ValueError, match="`num_runs` must be a positive integer"):
        _run(num_runs=0)


def test_float64_without_x64():
    with pytest.raises(ValueError, match="jax_enable_x64"):
        _run(dtype=np.float64)


def test_chunk_size_nonpositive():
    with pytest.raises(ValueError, match="`chunk_size` must be a positive integer"):
        user_problem().per_example_grads(user_problem().init_params, chunk_size=0)
