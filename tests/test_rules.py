"""The perturbation-rule interface: the new variants (ASAM, ASAM-ON, DNSAM, random direction) and a user's own rule."""

from __future__ import annotations

import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import D, N, exact_mean_update, flat, jax_G, make_problem, np_grads, user_problem
from jax.flatten_util import ravel_pytree

import sde_sam as ss
from sde_sam import variants as V

pytestmark = pytest.mark.usefixtures("x64")

# -- the new variants: discrete step against numpy ---------------------------------------------------------------

IDX = np.array([3, 0, 7, 12, 5, 9, 1, 14])  # one batch of B = 8 from n = 16 (the test_variants problem)
ALL = np.arange(N)


def _asam_eps(x, g, rho, c=0.01, mask=None):
    """ASAM's ``rho M T^2 g / ||M T g||``, ``T = |x| + c`` (Kwon et al. 2021), numpy."""
    mask = np.ones_like(x) if mask is None else mask
    T = np.abs(x) + c
    u = mask * T * g
    return rho * T * u / np.linalg.norm(u)


def test_asam_step_matches_numpy():
    problem, rho = make_problem(), 0.3
    x = flat(problem.init_params)
    want = np_grads(x + _asam_eps(x, np_grads(x, IDX).mean(0), rho), IDX).mean(0)
    np.testing.assert_allclose(jax_G(V.asam(rho), problem, IDX)[0], want, rtol=1e-10)


def test_asam_with_micro_batches_matches_a_python_loop():
    problem, rho, m = make_problem(), 0.3, 4
    x = flat(problem.init_params)
    want = np.mean(
        [np_grads(x + _asam_eps(x, np_grads(x, c).mean(0), rho), c).mean(0) for c in IDX.reshape(-1, m)], axis=0
    )
    np.testing.assert_allclose(jax_G(V.asam(rho, micro_batch_size=m), problem, IDX)[0], want, rtol=1e-10)


def test_asam_on_perturbs_the_masked_leaf_only():
    """ASAM-ON on the ``c`` leaf (flat index 0): ``eps = rho M T^2 g / ||M T g||``."""
    problem, rho = make_problem(), 0.3
    x = flat(problem.init_params)
    mask = np.r_[1.0, np.zeros(D)]
    want = np_grads(x + _asam_eps(x, np_grads(x, IDX).mean(0), rho, mask=mask), IDX).mean(0)
    got = jax_G(V.asam_on(rho, mask=lambda path: path == "c"), problem, IDX)[0]
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_dnsam_step_matches_numpy():
    """DNSAM: ``eps = rho g_gamma / ||g||`` with the full-data gradient's norm."""
    problem, rho = make_problem(), 0.3
    x = flat(problem.init_params)
    g_batch, g_full = np_grads(x, IDX).mean(0), np_grads(x, ALL).mean(0)
    want = np_grads(x + rho * g_batch / np.linalg.norm(g_full), IDX).mean(0)
    np.testing.assert_allclose(jax_G(V.dnsam(rho), problem, IDX)[0], want, rtol=1e-10)


def test_random_direction_step_is_the_gradient_at_a_random_point_on_the_sphere():
    """Given the perturbation the rule drew, ``G`` is numpy's batch gradient there and ``||eps|| = rho``; over 4000 keys
    ``eps/rho`` has mean 0 and ``E[e e^T] = I/d`` (each entry within 5 Monte Carlo s.e.), and two keys differ."""
    problem, rho = make_problem(), 0.3
    params, batch = problem.init_params, problem.take(jnp.asarray(IDX))
    x = flat(params)
    v = V.random_sam(rho)
    eps, _, _, _ = v.perturbations(problem, params, (), batch, jr.key(5))
    e = flat(jax.tree_util.tree_map(lambda a: a[0], eps))
    assert abs(np.linalg.norm(e) - rho) < 1e-12
    np.testing.assert_allclose(jax_G(v, problem, IDX, key=jr.key(5))[0], np_grads(x + e, IDX).mean(0), rtol=1e-10)
    assert not np.allclose(jax_G(v, problem, IDX, key=jr.key(6))[0], jax_G(v, problem, IDX, key=jr.key(5))[0])

    def unit(k):
        eps = v.perturbations(problem, params, (), batch, k)[0]
        return jax.flatten_util.ravel_pytree(jax.tree_util.tree_map(lambda a: a[0], eps))[0] / rho

    U = np.asarray(jax.jit(jax.vmap(unit))(jr.split(jr.key(0), 4000)))
    d = U.shape[1]
    se = U.std(0, ddof=1) / np.sqrt(len(U))
    assert np.all(np.abs(U.mean(0)) < 5 * se)
    outer = np.einsum("ri,rj->rij", U, U)
    se2 = outer.std(0, ddof=1) / np.sqrt(len(U))
    assert np.all(np.abs(outer.mean(0) - np.eye(d) / d) < 5 * se2 + 1e-12)


def test_new_variants_by_name():
    assert V.get("asam", rho=0.1).preconditioner == V.ParameterScale(0.01)
    assert isinstance(V.get("dnsam", rho=0.1).normalization, V.FullGradientNorm)
    assert isinstance(V.get("random_sam", rho=0.1).rule, V.RandomDirection)
    assert V.get("asam-on", rho=0.1).mask is V.is_normalization_param
    with pytest.raises(ValueError, match=r"`c` must be a finite number in \(0, inf\)"):
        V.asam(0.1, c=0.0)


# -- the new variants: drifts -------------------------------------------------------------------------------------


def _quadratic_problem(n=6, d=2, seed=0):
    """``f_i(x) = (1/2) x^T A x - b_i^T x``: one Hessian ``A`` for every example (Compagnoni et al.'s setting)."""
    rng = np.random.default_rng(seed)
    Q = rng.standard_normal((d, d))
    A = Q @ Q.T + np.eye(d)
    data = {"b": jnp.asarray(rng.standard_normal((n, d)))}
    loss = lambda x, ex: 0.5 * x @ jnp.asarray(A) @ x - ex["b"] @ x  # noqa: E731
    return ss.Problem(loss, data, jnp.asarray(rng.standard_normal(d)), name="quadratic"), A


def test_dnsam_drift_is_compagnonis_when_hessians_are_equal():
    """With ``H_i = A`` for all ``i`` the first-order DNSAM drift is ``g + rho A g/||g||`` (Compagnoni et al. 2023):
    the general rule, the closed form and the formula agree to 1e-12."""
    problem, A = _quadratic_problem()
    x = problem.init_params
    sampler, rho = ss.WithoutReplacement(3), 0.2
    g = np.asarray(problem.full_grad(x))
    want = g + rho * A @ g / np.linalg.norm(g)
    for drift in ("general", "closed_form"):
        got = np.asarray(ss.sde_model(problem, V.dnsam(rho), sampler, eta=0.1, drift=drift).drift(x))
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=drift)


def test_dnsam_first_order_diffusion_is_compagnonis_factor():
    """On the equal-Hessian quadratic, DNSAM's step is ``G = (I + rho A/||g||) g_gamma`` exactly, so ``Cov[G]`` is
    ``(I + rho A/||g||) c(B) Sigma (I + rho A/||g||)``: the first-order diffusion sample is linear in its Gaussian
    weights ``u``, and its exact covariance (Jacobian in ``u``) equals that of the enumerated discrete step."""
    from sde_sam._sde import _diffusion

    problem, _A = _quadratic_problem(n=5)
    x = problem.init_params
    sampler, v = ss.WithoutReplacement(2), V.dnsam(0.3)
    c = sampler.factor(2, 5)

    def sample(u):
        z = jax.tree_util.tree_map(lambda a: a * np.sqrt(c), _diffusion.sigma_sqrt_times(problem, x, u))
        return ss.sde.first_order_noise_of(v.rule, v, problem, x, z)

    M = np.asarray(jax.jacfwd(sample)(jnp.zeros(5)))
    rows = list(__import__("itertools").combinations(range(5), 2))
    Gs = np.stack([np.asarray(v.gradient(problem, x, (), problem.take(jnp.asarray(r)), jr.key(0))[0]) for r in rows])
    np.testing.assert_allclose(M @ M.T, np.cov(Gs.T, bias=True), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(
    "variant",
    [V.asam(0.1), V.asam(0.1, micro_batch_size=1), V.dnsam(0.1), V.asam_on(0.1, mask=lambda p: p == "weight")],
    ids=lambda v: v.name,
)
def test_new_variant_drifts_against_enumeration(variant):
    """``drift="expected"`` equals the enumerated mean of the discrete step (float64, to 1e-10); the general first-order
    drift equals ``d/d rho`` of that enumerated mean at 0 (central difference of the exact means, to 1e-6), i.e. two
    independent routes to ``b_0 + rho b_1``."""
    pr = user_problem(n=5, d=2).with_dtype(jnp.float64)
    x, sampler = pr.init_params, ss.WithoutReplacement(2)
    want = exact_mean_update(pr, variant, sampler, x)
    got = np.asarray(ravel_pytree(ss.sde_model(pr, variant, sampler, eta=0.1, drift="expected").drift(x))[0])
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
    h = 1e-4
    plus, minus = (exact_mean_update(pr, variant.replace(rho=r), sampler, x) for r in (h, 0.0))
    minus2 = exact_mean_update(pr, variant.replace(rho=2 * h), sampler, x)
    b1 = (4 * plus - 3 * minus - minus2) / (2 * h)  # one-sided second-order difference (rho >= 0)
    general = np.asarray(ravel_pytree(ss.sde.general_drift(pr, variant, sampler, x))[0])
    np.testing.assert_allclose(general, minus + variant.rho * b1, rtol=1e-6, atol=1e-8)


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_random_direction_drift_and_mean_step():
    """The first-order drift of random-direction SAM is ``g`` (general and closed form); the Monte Carlo mean step
    ``E[G]`` differs from ``g`` only at ``O(rho^2)`` and is unbiased against 4000 independent discrete steps."""
    pr = user_problem(n=6, d=2).with_dtype(jnp.float64)
    x, sampler, v = pr.init_params, ss.WithReplacement(3), V.random_sam(0.3)
    g = np.asarray(ravel_pytree(pr.full_grad(x))[0])
    general, err = ss.sde.general_drift(pr, v, sampler, x, num_samples=4000, return_stderr=True)
    general, err = (np.asarray(ravel_pytree(t)[0]) for t in (general, err))
    assert np.all(np.abs(general - g) < 5 * err)  # E[H_gamma N(z)] = 0: only sampling noise remains
    np.testing.assert_allclose(ravel_pytree(ss.sde.closed_form_drift(pr, v, sampler, x))[0], g, rtol=1e-12)
    b, b_err = ss.sde.expected_drift(pr, v, sampler, x, key=jr.key(11), num_samples=4000, return_stderr=True)
    b, b_err = (np.asarray(ravel_pytree(t)[0]) for t in (b, b_err))

    def one(k):
        kb, kv = jr.split(k)
        return ravel_pytree(v.gradient(pr, x, (), pr.take(sampler.indices(kb, 0, 6)), kv)[0])[0]

    draws = np.asarray(jax.jit(jax.vmap(one))(jr.split(jr.key(12), 4000)))
    ref, ref_err = draws.mean(0), draws.std(0, ddof=1) / np.sqrt(4000)
    assert np.all(np.abs(b - ref) < 5 * np.hypot(b_err, ref_err)), (b, ref)


def test_asam_has_no_closed_form_and_says_so():
    pr = user_problem(n=5, d=2)
    with pytest.raises(ValueError, match=r"closed_form.*not available for variant 'ASAM'"):
        ss.sde.closed_form_drift(pr, V.asam(0.1), ss.WithoutReplacement(2), pr.init_params)
    with pytest.raises(ValueError, match="first_order"):
        ss.sde_model(pr, V.asam(0.1), ss.WithoutReplacement(2), diffusion="first_order")


# -- a rule written outside the package (README's block) -------------------------------------------------------


def _readme_rule():
    """Execute the user-rule block of docs/variants.md as a user would; returns its namespace (``SignAscent``,
    ``variant``)."""
    import re
    from pathlib import Path

    text = Path(__file__).parent.joinpath("..", "docs", "variants.md").read_text()
    block = re.search(r"<!-- user-rule -->\n```python\n(.*?)```", text, re.S).group(1)  # pyright: ignore[reportOptionalMemberAccess]
    namespace: dict = {}
    exec(compile(block, "docs/variants.md:user-rule", "exec"), namespace)
    return namespace


def test_user_rule_discrete_step_and_optax_match_numpy():
    ns = _readme_rule()
    variant = ns["variant"].replace(rho=0.3)
    problem = make_problem()
    x = flat(problem.init_params)
    want = np_grads(x + 0.3 * np.sign(np_grads(x, IDX).mean(0)), IDX).mean(0)
    np.testing.assert_allclose(jax_G(variant, problem, IDX)[0], want, rtol=1e-10)

    import optax

    stepper = ss.with_optax(problem, variant, optax.sgd(0.1))
    state = stepper.init(problem.init_params)
    state, _ = jax.jit(stepper.step)(state, problem.take(jnp.asarray(IDX)), jr.key(0))
    np.testing.assert_allclose(flat(state.params), x - 0.1 * want, rtol=1e-10)

    runs = ss.run_discrete(
        problem,
        variant,
        ss.WithoutReplacement(8),
        eta=0.1,
        steps=4,
        num_runs=2,
        key=jr.key(0),
        record=ss.observables("loss", every=2),
    )
    assert np.all(np.isfinite(runs.values["loss"])) and runs.values["loss"].shape == (2, 3)


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_user_rule_sde_drifts_and_empirical_diffusion():
    """General drift = ``d/d rho`` of the enumerated mean step (1e-6); expected drift = that mean (1e-10); the
    empirical diffusion's ``E||S^{1/2} z||^2`` over 3000 draws equals the enumerated ``tr Cov[G]`` within 5 s.e."""
    variant = _readme_rule()["variant"].replace(rho=0.2)
    pr = user_problem(n=5, d=2).with_dtype(jnp.float64)
    x, sampler = pr.init_params, ss.WithoutReplacement(2)
    mean = exact_mean_update(pr, variant, sampler, x)
    expected = ss.sde_model(pr, variant, sampler, eta=0.1, drift="expected")
    np.testing.assert_allclose(ravel_pytree(expected.drift(x))[0], mean, rtol=1e-10, atol=1e-13)
    h = 1e-4
    b0 = exact_mean_update(pr, variant.replace(rho=0.0), sampler, x)
    b1 = (
        4 * exact_mean_update(pr, variant.replace(rho=h), sampler, x)
        - 3 * b0
        - exact_mean_update(pr, variant.replace(rho=2 * h), sampler, x)
    ) / (2 * h)
    general = ss.sde_model(pr, variant, sampler, eta=0.1, drift="general", diffusion="empirical")
    np.testing.assert_allclose(ravel_pytree(general.drift(x))[0], b0 + 0.2 * b1, rtol=1e-6, atol=1e-8)

    import itertools

    rows = list(itertools.permutations(range(5), 2))
    Gs = np.stack(
        [np.asarray(ravel_pytree(variant.gradient(pr, x, (), pr.take(jnp.asarray(r)), jr.key(0))[0])[0]) for r in rows]
    )
    tr_cov = np.trace(np.cov(Gs.T, bias=True))
    sq = np.asarray(
        jax.jit(jax.vmap(lambda k: jnp.sum(ravel_pytree(general.diffusion_sample(x, k))[0] ** 2)))(
            jr.split(jr.key(2), 3000)
        )
    )
    assert abs(sq.mean() - tr_cov) < 5 * sq.std(ddof=1) / np.sqrt(sq.size), (sq.mean(), tr_cov)


def test_user_rule_simulates_and_enters_the_weak_order_study():
    """The SDE of the user rule simulates, and the weak-order study measures it (Monte Carlo against the discrete
    runs; a finite error with a positive standard error, no divergence)."""
    from analysis import weak_order as wo

    variant = _readme_rule()["variant"]
    lin, sampler = wo.linreg_problem(), ss.WithReplacement(2)
    model = ss.sde_model(lin, variant, sampler, eta=0.1)
    paths = ss.simulate(model, t1=0.5, num_paths=8, key=jr.key(0), record=ss.observables("loss", every=1))
    assert np.all(np.isfinite(paths.values["loss"]))
    we = wo.weak_error(lin, variant, sampler, eta=0.1, t1=0.5, method="mc", num_paths=256, key=jr.key(1))
    assert np.isfinite(we.value) and we.stderr > 0 and we.diverged == 0, we
