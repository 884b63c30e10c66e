"""Momentum in the discrete runner (heavy ball, Nesterov) and its rescaled-learning-rate SDE (Li, Tai & E)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_sam as ss
from sde_sam._training._train import run_keys

pytestmark = pytest.mark.usefixtures("x64")


def _linreg():
    return ss.problems.linear_regression(n=32, d=4, seed=3).with_dtype(jnp.float64)


def _numpy_run(pr, sampler, key, eta, beta, nesterov, steps):
    """Hand-written heavy-ball / Nesterov SGD in numpy on the runner's batches (run 0 of ``key``)."""
    a, y = np.asarray(pr.data["a"]), np.asarray(pr.data["y"])
    w, v = np.asarray(pr.init_params, np.float64), np.zeros(a.shape[1])
    sample_key = jr.split(jr.split(key, 1)[0])[0]
    out = [w.copy()]
    for k in range(steps):
        idx = np.asarray(sampler.indices(sample_key, k, pr.num_examples))
        g = a[idx].T @ (a[idx] @ w - y[idx]) / len(idx)
        v = beta * v + g
        w = w - eta * ((g + beta * v) if nesterov else v)
        out.append(w.copy())
    return np.stack(out)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_step_equals_a_hand_written_numpy_step(nesterov):
    pr, sampler, key = _linreg(), ss.WithReplacement(4), jr.key(5)
    runs = ss.run_discrete(
        pr,
        ss.variants.sgd(),
        sampler,
        eta=0.05,
        steps=12,
        num_runs=1,
        key=key,
        momentum=ss.Momentum(0.9, nesterov=nesterov),
        save_params=True,
        dtype=jnp.float64,
        progress=False,
    )
    want = _numpy_run(pr, sampler, key, 0.05, 0.9, nesterov, 12)
    np.testing.assert_allclose(np.asarray(runs.saved_params)[0], want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(runs.times, np.arange(13) * 0.05 / (1 - 0.9))  # the rescaled SDE's time
    assert runs.config["momentum"] == {"beta": 0.9, "nesterov": nesterov}


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_momentum_applies_to_every_variant_and_zero_is_the_plain_method():
    pr, sampler = _linreg(), ss.WithReplacement(4)
    kw = {"eta": 0.05, "steps": 6, "num_runs": 2, "key": jr.key(0), "dtype": jnp.float64, "progress": False}
    for v in (ss.variants.sam(0.05), ss.variants.m_sam(0.05, 2), ss.variants.rw_sam(0.05)):
        plain = ss.run_discrete(pr, v, sampler, **kw)
        zero = ss.run_discrete(pr, v, sampler, momentum=0.0, **kw)
        np.testing.assert_array_equal(plain.values["loss"], zero.values["loss"])
        heavy = ss.run_discrete(pr, v, sampler, momentum=0.5, **kw)
        assert np.all(np.isfinite(heavy.values["loss"])) and not np.allclose(heavy.values["loss"], plain.values["loss"])
    for bad in (1.0, -0.1, float("nan"), True):
        with pytest.raises((ValueError, TypeError)):  # TypeError: the runtime type check refuses a bool
            ss.run_discrete(pr, ss.variants.sgd(), sampler, momentum=bad, **kw)


def test_momentum_sde_model_rescales_the_step():
    pr = _linreg()
    model = ss.sde_model(pr, ss.variants.sam(0.05), ss.WithReplacement(4), eta=0.05, momentum=0.9)
    assert model.eta == pytest.approx(0.5) and model.momentum == ss.Momentum(0.9)
    assert model.replace(eta=0.02).eta == pytest.approx(0.2)
    assert model.replace(diffusion="none").eta == pytest.approx(0.5)
    with pytest.raises(ValueError, match="first order"):  # the plain method's second-order drift is not momentum's
        ss.sde_model(pr, ss.variants.sam(0.05), ss.WithReplacement(4), eta=0.05, order=2, momentum=0.9)


def test_full_batch_heavy_ball_follows_the_rescaled_gradient_flow_to_first_order():
    """Without noise (the whole data as the batch) heavy-ball GD with step eta tracks the gradient flow in time
    ``t = k eta / (1 - beta)`` with an error of order ``eta``: halving eta halves the error at t = 1 (ratio 1.7-2.3),
    and without the rescaling (time ``k eta``) the error does not shrink at all."""
    pr = _linreg()
    beta, t1 = 0.5, 1.0
    flow = ss.sde_model(pr, ss.variants.sgd(), ss.WithoutReplacement(32), eta=1e-4, diffusion="none")
    exact = np.asarray(ss.simulate(flow, t1=t1, key=jr.key(0), progress=False).final_params)[0]
    errors, unscaled = [], []
    for eta in (0.02, 0.01):
        steps = round(t1 * (1 - beta) / eta)
        runs = ss.run_discrete(
            pr,
            ss.variants.sgd(),
            ss.WithoutReplacement(32),
            eta=eta,
            steps=steps,
            num_runs=1,
            key=jr.key(0),
            momentum=beta,
            dtype=jnp.float64,
            progress=False,
        )
        errors.append(np.linalg.norm(np.asarray(runs.final_params)[0] - exact))
        plain = ss.run_discrete(
            pr,
            ss.variants.sgd(),
            ss.WithoutReplacement(32),
            eta=eta,
            steps=steps,
            num_runs=1,
            key=jr.key(0),
            dtype=jnp.float64,
            progress=False,
        )
        unscaled.append(np.linalg.norm(np.asarray(plain.final_params)[0] - exact))
    assert 1.7 < errors[0] / errors[1] < 2.3, errors
    assert min(unscaled) > 20 * errors[1], (unscaled, errors)


@pytest.mark.slow
@pytest.mark.parametrize("variant", [ss.variants.sgd(), ss.variants.usam(0.2)], ids=["SGD", "USAM"])
def test_momentum_weak_error_of_the_rescaled_sde_shrinks_with_eta(variant):
    """Linear regression (n = 32, d = 4), ``WithReplacement(4)``, ``beta = 0.5``: ``E[f]`` at ``t = 0.8`` of 8192
    momentum runs against 8192 paths of the rescaled SDE (closed-form drift, leading diffusion, ``dt = eta_eff / 8``
    so that Euler-Maruyama's own error is small), at ``eta = 0.04, 0.02, 0.01``. Measured: SGD gaps 9.6e-3, 2.3e-3,
    7.7e-4 (slope 1.8), USAM 2.6e-2, 8.5e-3, 3.4e-3 (slope 1.5), Monte Carlo s.e. 3-7e-4. Asserted: the log-log
    slope is at least 0.8 (first order) and the gap at 0.01 is a fifth of the gap at 0.04 at most. A model without
    the rescaling (the plain method's SDE at step ``eta``) is off by O(1) and fails both."""
    pr, sampler, beta, t1, n = _linreg(), ss.WithReplacement(4), 0.5, 0.8, 8192
    gaps = []
    for eta in (0.04, 0.02, 0.01):
        steps = round(t1 * (1 - beta) / eta)
        runs = ss.run_discrete(
            pr,
            variant,
            sampler,
            eta=eta,
            steps=steps,
            num_runs=n,
            key=jr.key(1),
            momentum=beta,
            dtype=jnp.float64,
            record=ss.observables("loss", every=steps),
            progress=False,
        )
        model = ss.sde_model(pr, variant, sampler, eta=eta, momentum=beta, drift="closed_form")
        paths = ss.simulate(
            model,
            t1=t1,
            num_paths=n,
            key=jr.key(2),
            dt=model.eta / 8,
            progress=False,
            record=ss.observables("loss", every=8 * steps),
        )
        gaps.append(abs(runs.mean("loss")[-1] - paths.mean("loss")[-1]))
    slope = np.polyfit(np.log([0.04, 0.02, 0.01]), np.log(gaps), 1)[0]
    assert slope > 0.8 and gaps[2] < 0.2 * gaps[0], (gaps, slope)


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_train_config_momentum_runs_the_runners_momentum_and_rescales_the_times():
    """``TrainConfig(momentum=beta)`` trains exactly what ``run_discrete(..., momentum=Momentum(beta))`` does, and
    its recorded times are ``k eta / (1 - beta)``; a bad ``beta`` or Nesterov without momentum is refused."""
    from sde_sam import train

    cfg = train.TrainConfig(
        problem="digits_mlp",
        problem_kwargs={"hidden": 4},
        variant="sam",
        variant_kwargs={"rho": 0.05},
        batch_size=16,
        eta=0.01,
        steps=6,
        every=3,
        seeds=(0, 1),
        observables=("loss",),
        momentum=0.9,
        nesterov=True,
    )
    problem = train.build_problem(cfg)
    rec = train.record(cfg, problem=problem, keep_params=True)
    runs = ss.run_discrete(
        problem,
        ss.variants.sam(0.05),
        ss.WithoutReplacement(16),
        eta=0.01,
        steps=6,
        key=run_keys((0, 1)),
        record=ss.observables("loss", every=3),
        momentum=ss.Momentum(0.9, nesterov=True),
    )
    for a, b in zip(
        jax.tree_util.tree_leaves(rec.final_params), jax.tree_util.tree_leaves(runs.final_params), strict=False
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_allclose(rec.times, [0.0, 0.3, 0.6], rtol=1e-12)
    np.testing.assert_allclose(rec.times, runs.times, rtol=1e-12)
    plain = train.record(cfg.replace(momentum=0.0, nesterov=False), problem=problem, keep_params=True)
    assert not np.allclose(np.asarray(plain.final_params["dense_0"]["w"]), np.asarray(rec.final_params["dense_0"]["w"]))  # pyright: ignore[reportOptionalSubscript]
    with pytest.raises(ValueError, match="beta"):
        cfg.replace(momentum=1.0)
    with pytest.raises(ValueError, match="nesterov"):
        cfg.replace(momentum=0.0)


@pytest.mark.parametrize("nesterov", [False, True])
def test_elapsed_steps_is_the_displacement_of_optax_momentum_under_a_constant_gradient(nesterov):
    """Under a constant gradient ``G`` the momentum runner moves ``eta / (1 - beta) * elapsed_steps(k) * G``:
    checked against optax's own heavy-ball / Nesterov SGD (an independent implementation of the same update)."""
    import optax

    beta, eta, g = 0.9, 0.1, jnp.array([1.0, -2.0])
    mom = ss.Momentum(beta, nesterov=nesterov)
    opt = optax.sgd(eta, momentum=beta, nesterov=nesterov)
    x, state = jnp.zeros(2), opt.init(jnp.zeros(2))
    for k in range(1, 31):
        upd, state = opt.update(g, state, x)
        x = optax.apply_updates(x, upd)
        want = -eta / (1.0 - beta) * float(mom.elapsed_steps(k)) * g
        np.testing.assert_allclose(np.asarray(x), np.asarray(want), rtol=1e-12)
    # the lag c / (1 - beta) steps once beta^k is negligible; a plain k would be off by it
    assert abs(400 - float(mom.elapsed_steps(400)) - (beta**2 if nesterov else beta) / (1 - beta)) < 1e-9
    with pytest.raises(ValueError, match="`k`"):
        mom.elapsed_steps(-1)
