"""SVAG (Li, Malladi & Arora 2021): mean E[G] and covariance l Cov[G] per step, exactly; the runner option."""

import itertools

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import WRONG_TYPE, location_problem, user_problem
from jax.flatten_util import ravel_pytree

import sde_sam as ss
from sde_sam._variants._svag import svag_coefficients, svag_gradient

pytestmark = pytest.mark.usefixtures("x64")


@pytest.mark.parametrize("l", [1, 2, 4, 8])
def test_coefficients(l):  # noqa: E741
    a, b = svag_coefficients(l)
    assert abs(a + b - 1) < 1e-15 and abs(a * a + b * b - l) < 1e-12


@pytest.mark.parametrize(
    "variant",
    [
        ss.variants.sam(0.4),
        ss.variants.m_usam(0.4, 1),
        ss.variants.rw_sam(0.4, 2.0, score="exact", weights_in_descent=True),
    ],
    ids=lambda v: v.name,
)
def test_svag_mean_and_covariance_are_exact(variant):
    """Over all pairs of independent batches (exact probabilities), ``G_l`` has mean ``E[G]`` and covariance
    ``l Cov[G]`` (the one-step moments of the plain update, by enumeration), float64."""
    pr = user_problem(n=5, d=2).with_dtype(jnp.float64)
    x = pr.init_params
    rows = list(itertools.combinations(range(5), 2))  # UniformSubset(2): each subset with probability 1/10
    flat = lambda t: np.asarray(ravel_pytree(t)[0])  # noqa: E731
    Gs = np.stack([flat(variant.gradient(pr, x, (), pr.take(jnp.asarray(r)), jr.key(0))[0]) for r in rows])
    mean, cov = Gs.mean(0), np.cov(Gs.T, bias=True)
    step = jax.jit(
        lambda i, j, l: svag_gradient(  # noqa: E741
            pr,
            variant,
            l,
            x,
            (),
            (pr.take(i), pr.take(j)),
            (jr.key(0), jr.key(0)),
        )[0],
        static_argnums=2,
    )
    for l in (2, 4):  # noqa: E741
        Gl = np.stack([flat(step(jnp.asarray(r1), jnp.asarray(r2), l)) for r1, r2 in itertools.product(rows, rows)])
        np.testing.assert_allclose(Gl.mean(0), mean, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(np.cov(Gl.T, bias=True), l * cov, rtol=1e-9, atol=1e-13)


def test_run_discrete_svag_on_a_quadratic():
    """SGD-SVAG on ``f_i = ||x - z_i||^2 / 2``: ``E x_t = zbar + (1 - eta/l)^{l k} (x0 - zbar)`` exactly, and the
    recorded times are the plain method's. 4096 runs, tolerance 5 s.e. per coordinate."""
    z = np.random.default_rng(0).standard_normal((8, 2))
    pr = location_problem(jnp.asarray(z, jnp.float64), x0=np.array([2.0, -1.0]))
    sampler, eta, steps, l = ss.WithReplacement(2), 0.2, 10, 4  # noqa: E741
    plain = ss.run_discrete(
        pr,
        ss.variants.sgd(),
        sampler,
        eta=eta,
        steps=steps,
        num_runs=4,
        key=jr.key(0),
        record=ss.observables("loss", every=5),
        dtype=jnp.float64,
    )
    runs = ss.run_discrete(
        pr,
        ss.variants.sgd(),
        sampler,
        eta=eta,
        steps=steps,
        num_runs=4096,
        key=jr.key(1),
        record=ss.observables("loss", every=5),
        dtype=jnp.float64,
        svag=l,
    )
    np.testing.assert_array_equal(runs.times, plain.times)
    assert runs.config["svag"] == l
    final = np.asarray(runs.final_params)
    zbar = z.mean(0)
    want = zbar + (1 - eta / l) ** (l * steps) * (np.array([2.0, -1.0]) - zbar)
    se = final.std(0, ddof=1) / np.sqrt(final.shape[0])
    assert np.all(np.abs(final.mean(0) - want) < 5 * se), (final.mean(0), want, se)


def test_svag_one_is_the_plain_method_and_bad_values_are_refused():
    pr = user_problem(n=8, d=2)
    kw = {"eta": 0.1, "steps": 4, "num_runs": 2, "key": jr.key(0), "record": ss.observables("loss", every=2)}
    a = ss.run_discrete(pr, ss.variants.sam(0.1), ss.WithReplacement(2), **kw)
    b = ss.run_discrete(pr, ss.variants.sam(0.1), ss.WithReplacement(2), svag=1, **kw)
    np.testing.assert_array_equal(a.values["loss"], b.values["loss"])
    for bad in (0, -1, 2.5, True):
        with pytest.raises(WRONG_TYPE if isinstance(bad, float) else ValueError, match="svag"):
            ss.run_discrete(pr, ss.variants.sam(0.1), ss.WithReplacement(2), svag=bad, **kw)  # pyright: ignore[reportArgumentType]
