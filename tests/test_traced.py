"""Hyperparameters as traced values: a sweep over eta and rho reuses one compiled program, with the values of a
program compiled for each number."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_sam as ss
from sde_sam._compiles import counting
from sde_sam._sde._simulate import em_step
from sde_sam._training._runner import traced_hyperparameters

pytestmark = pytest.mark.usefixtures("released_programs")


def _count(fn):
    """XLA backend compilations while ``fn`` runs (``jax.monitoring``, :func:`sde_sam._compiles.counting`)."""
    with counting() as c:
        fn()
    return c.count


@pytest.mark.parametrize("make", [lambda rho: ss.variants.sam(rho), lambda rho: ss.variants.m_sam(rho, 2)])
def test_a_3x3_grid_compiles_no_more_than_its_first_point(make):
    problem, sampler = ss.problems.linear_regression(n=32, d=3), ss.WithReplacement(4)
    record = ss.observables("loss", every=5)

    def run(eta, rho):  # "rule" blocks: the flop count of the step is taken (and kept) as for a large problem
        ss.run_discrete(
            problem,
            make(rho),
            sampler,
            eta=eta,
            steps=10,
            num_runs=2,
            key=jr.key(0),
            record=record,
            progress=False,
            runs_per_block="rule",
        )
        model = ss.sde_model(problem, make(rho), sampler, eta=eta, drift=ss.sde.GeneralDrift(num_samples=16))
        ss.simulate(
            model, t1=10 * eta, num_paths=2, key=jr.key(1), record=record, progress=False, paths_per_block="rule"
        )

    first = _count(lambda: run(0.05, 0.05))
    assert first > 0  # the counter sees compilations
    rest = _count(lambda: [run(eta, rho) for eta in (0.02, 0.05, 0.1) for rho in (0.02, 0.05, 0.1)])
    assert rest == 0


_FAMILIES = {  # a variant from its hyperparameters (rho first), and three points of them
    "F-SAM": (
        lambda rho, sigma, lam: ss.variants.f_sam(rho, sigma=sigma, ema_decay=lam),
        [(0.05, 1.0, 0.9), (0.1, 0.7, 0.85), (0.02, 0.3, 0.5)],
    ),
    "RW-SAM": (
        lambda rho, lam: ss.variants.rw_sam(rho, inverse_temperature=lam),
        [(0.05, 1.0), (0.1, 2.3), (0.02, 0.4)],
    ),
    "ASAM": (lambda rho, c: ss.variants.asam(rho, c=c), [(0.05, 0.01), (0.1, 0.03), (0.02, 0.2)]),
}


@pytest.mark.parametrize("family", sorted(_FAMILIES))
def test_a_sweep_over_a_rules_hyperparameters_compiles_no_more_than_its_first_point(family):
    """F-SAM's sigma and lambda, RW-SAM's lambda, ASAM's c are traced like rho: discrete runs and SDE paths over
    three points of them compile nothing after the first point."""
    make, points = _FAMILIES[family]
    problem, sampler = ss.problems.linear_regression(n=32, d=3), ss.WithReplacement(4)
    record = ss.observables("loss", every=5)

    def run(hyper):
        ss.run_discrete(
            problem,
            make(*hyper),
            sampler,
            eta=0.05,
            steps=10,
            num_runs=2,
            key=jr.key(0),
            record=record,
            progress=False,
            runs_per_block="rule",
        )
        model = ss.sde_model(problem, make(*hyper), sampler, eta=0.05, drift=ss.sde.GeneralDrift(num_samples=16))
        ss.simulate(model, t1=0.5, num_paths=2, key=jr.key(1), record=record, progress=False, paths_per_block="rule")

    assert _count(lambda: run(points[0])) > 0
    assert _count(lambda: [run(h) for h in points[1:]]) == 0


@pytest.mark.parametrize("family", sorted(_FAMILIES))
def test_traced_rule_hyperparameters_give_the_bits_of_constants(family):
    """One step (update and new rule state, F-SAM's EMA started away from zero) with the hyperparameters Python
    constants of the compiled program against the same numbers as its arguments."""
    make, points = _FAMILIES[family]
    variant = make(*points[1])
    problem = ss.problems.digits_mlp(hidden=8)
    batch = problem.take(jnp.arange(16))
    x, key = problem.init_params, jr.key(3)
    state = jax.tree_util.tree_map(lambda a: 0.3 * a, problem.full_grad(x)) if family == "F-SAM" else variant.init(x)
    constant = jax.jit(lambda p, s: variant.gradient(problem, p, s, batch, key)[:2])(x, state)
    traced = jax.jit(lambda v, p, s: v.gradient(problem, p, s, batch, key)[:2])(
        traced_hyperparameters(variant, jnp.float32), x, state
    )
    leaves = jax.tree_util.tree_leaves
    assert len(leaves(traced_hyperparameters(variant, jnp.float32))) > 1  # more than rho is traced
    for a, b in zip(leaves(constant), leaves(traced), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_traced_rho_gives_the_bits_of_a_constant_rho():
    """One SAM step with rho a Python constant of the compiled program against rho an argument of it."""
    problem = ss.problems.digits_mlp(hidden=8)
    variant = ss.variants.m_sam(0.05, 4)
    batch = problem.take(jnp.arange(16))
    x, key = problem.init_params, jr.key(3)
    constant = jax.jit(lambda p: variant.gradient(problem, p, (), batch, key)[0])(x)
    traced = jax.jit(lambda v, p: v.gradient(problem, p, (), batch, key)[0])(
        traced_hyperparameters(variant, jnp.float32), x
    )
    for a, b in zip(jax.tree_util.tree_leaves(constant), jax.tree_util.tree_leaves(traced), strict=True):
        np.testing.assert_array_equal(a, b)


def test_rho_zero_stays_sgd_under_tracing():
    """Whether rho is zero is static: rho = 0 is SGD's program, not a perturbation of size 0."""
    problem, sampler = ss.problems.linear_regression(n=32, d=3), ss.WithReplacement(4)
    kw = {"eta": 0.05, "steps": 10, "num_runs": 2, "key": jr.key(0), "progress": False}
    zero = ss.run_discrete(problem, ss.variants.sam(0.0), sampler, **kw)
    sgd = ss.run_discrete(problem, ss.variants.sgd(), sampler, **kw)
    np.testing.assert_array_equal(zero.values["loss"], sgd.values["loss"])
    assert not ss.variants.sam(0.0).perturbs and ss.variants.sam(0.1).perturbs


def test_em_step_runs_with_a_model_passed_through_jit():
    """A model handed to ``jax.jit`` has a traced ``eta``: ``em_step`` without ``noise_scale`` still runs (as in
    ``benchmarks/simulate.py``'s Python loop), and equals the step with the numbers to float32 rounding."""
    problem = ss.problems.linear_regression(n=16, d=2)
    model = ss.sde_model(problem, ss.variants.sam(0.05), ss.WithReplacement(4), eta=0.1)
    x, key = problem.init_params, jr.key(0)
    traced = jax.jit(lambda m, p: em_step(m, p, key, 0, m.eta))(model, x)
    plain = em_step(model, x, key, 0, model.eta)
    for a, b in zip(jax.tree_util.tree_leaves(traced), jax.tree_util.tree_leaves(plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_refinements_of_dt_at_the_same_recorded_times_share_one_program():
    """``dt = eta / r`` recorded at the same times (``every * r`` steps per segment): the steps per segment are traced,
    so the refinements reuse the program of ``r = 1``; each refinement takes ``every * r`` steps per segment, as a
    run recording every step shows at those steps (a wrong trip count would move the path, not round it)."""
    problem = ss.problems.linear_regression(n=32, d=3)
    model = ss.sde_model(problem, ss.variants.sam(0.05), ss.WithReplacement(4), eta=0.1)
    kw = {"t1": 1.2, "num_paths": 2, "key": jr.key(2), "progress": False, "paths_per_block": 2}

    def refined(r, every=3):
        return ss.simulate(model, dt=0.1 / r, record=ss.observables("loss", every=every * r), **kw)

    assert _count(lambda: refined(1)) > 0
    assert _count(lambda: [refined(2), refined(4)]) == 0
    coarse = refined(4)
    fine = ss.simulate(model, dt=0.1 / 4, record=ss.observables("loss", every=1), **kw)
    np.testing.assert_array_equal(coarse.steps, fine.steps[::12])
    np.testing.assert_array_equal(coarse.values["loss"], fine.values["loss"][:, ::12])
