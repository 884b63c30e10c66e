"""Each variant's update direction against an independent plain-numpy computation (DESIGN §2)."""

import dataclasses

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import B, D, N, flat, jax_G, make_problem, np_grads, np_losses  # noqa: F401

import sde_sam as ss
from sde_sam import variants as V
from sde_sam._problems._problem import path_name
from sde_sam._variants._variant import rademacher_like, resolve_mask

pytestmark = pytest.mark.usefixtures("x64")  # float64 throughout (tests/conftest.py)


def nrm(v):
    return v / np.linalg.norm(v)


IDX = np.array([3, 0, 7, 12, 5, 9, 1, 14])


@pytest.mark.parametrize(
    "variant, direction",
    [
        (V.sgd(), None),
        (V.usam(0.1), lambda x, i: np_grads(x, i).mean(0)),
        (V.sam(0.1), lambda x, i: nrm(np_grads(x, i).mean(0))),
        (V.n_usam(0.1), lambda x, i: np_grads(x, np.arange(N)).mean(0)),
        (V.n_sam(0.1), lambda x, i: nrm(np_grads(x, np.arange(N)).mean(0))),
    ],
    ids=lambda v: getattr(v, "name", ""),
)
def test_single_perturbation_variants_match_numpy(variant, direction):
    problem = make_problem()
    x = flat(problem.init_params)
    got, _ = jax_G(variant, problem, IDX)
    if direction is None:
        want = np_grads(x, IDX).mean(0)
    else:
        d = direction(x, IDX)
        want = np_grads(x + variant.rho * d, IDX).mean(0)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("m", [1, 2, 4])
def test_m_sam_matches_python_loop_over_micro_batches(m, normalize):
    problem = make_problem()
    x = flat(problem.init_params)
    rho = 0.2
    variant = V.m_sam(rho, m) if normalize else V.m_usam(rho, m)
    got, _ = jax_G(variant, problem, IDX)
    terms = []
    for j in range(B // m):  # the serial form: one SAM step per micro-batch
        mb = IDX[j * m : (j + 1) * m]
        d = np_grads(x, mb).mean(0)
        d = nrm(d) if normalize else d
        terms.append(np_grads(x + rho * d, mb).mean(0))
    np.testing.assert_allclose(got, np.mean(terms, axis=0), rtol=1e-10, atol=1e-12)


def test_m_sam_with_m_equal_batch_is_sam():
    problem = make_problem()
    np.testing.assert_allclose(jax_G(V.m_sam(0.1, B), problem, IDX)[0], jax_G(V.sam(0.1), problem, IDX)[0], rtol=1e-12)


@pytest.mark.parametrize("normalize", [True, False])
def test_f_sam_ema_sequence_follows_the_paper_rule(normalize):
    """d_k = g_k - sigma mu_{k-1}, mu_k = lam mu_{k-1} + (1 - lam) g_k, mu_0 = 0 (Li et al. 2024; DESIGN §2)."""
    problem = make_problem()
    rho, sigma, lam = 0.1, 0.7, 0.6
    variant = (V.f_sam if normalize else V.f_usam)(rho, sigma=sigma, ema_decay=lam)
    state = variant.init(problem.init_params)
    mu = np.zeros(D + 1)
    x = flat(problem.init_params)
    rng = np.random.default_rng(1)
    for _ in range(4):
        idx = rng.choice(N, B, replace=False)
        got, state = jax_G(variant, problem, idx, state)
        g = np_grads(x, idx).mean(0)
        d = g - sigma * mu
        d = nrm(d) if normalize else d
        want = np_grads(x + rho * d, idx).mean(0)
        mu = lam * mu + (1 - lam) * g
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(flat(state), mu, rtol=1e-12, atol=1e-14)


def test_f_sam_first_step_uses_the_raw_batch_gradient():
    problem = make_problem()
    np.testing.assert_allclose(jax_G(V.f_sam(0.1), problem, IDX)[0], jax_G(V.sam(0.1), problem, IDX)[0], rtol=1e-12)


def test_sam_on_perturbs_only_the_masked_leaves_with_norm_over_them():
    problem = make_problem()
    variant = V.sam_on(0.3, mask=lambda path: path == "c")
    params = problem.init_params
    batch = problem.take(jnp.asarray(IDX))
    eps, _, _, _ = variant.perturbations(problem, params, (), batch, jr.key(0))
    assert np.all(np.asarray(eps["w"]) == 0.0)
    np.testing.assert_allclose(abs(float(eps["c"][0])), 0.3, rtol=1e-12)  # |eps_c| = rho: norm over c alone
    x = flat(params)
    g = np_grads(x, IDX).mean(0)
    want = np_grads(x + np.r_[0.3 * np.sign(g[0]), np.zeros(D)], IDX).mean(0)
    np.testing.assert_allclose(jax_G(variant, problem, IDX)[0], want, rtol=1e-10)


def test_sam_on_default_mask_selects_layer_norm_parameters():
    problem = ss.problems.digits_mlp(hidden=8)
    mask = resolve_mask(V.sam_on(0.1).mask, problem.init_params)
    selected = sorted(path_name(p) for p, m in jax.tree_util.tree_flatten_with_path(mask)[0] if m)
    assert selected == ["layer_norm_0/bias", "layer_norm_0/scale"]


def test_sam_on_accepts_a_pytree_mask():
    problem = make_problem()
    by_tree = jax_G(V.sam_on(0.3, mask={"c": True, "w": False}), problem, IDX)[0]
    by_pred = jax_G(V.sam_on(0.3, mask=lambda p: p == "c"), problem, IDX)[0]
    np.testing.assert_array_equal(by_tree, by_pred)


@pytest.mark.parametrize("descent", [False, True])
def test_rw_sam_exact_score_matches_numpy(descent):
    problem = make_problem()
    lam, rho = 0.8, 0.15
    variant = V.rw_sam(rho, inverse_temperature=lam, score="exact", weights_in_descent=descent)
    x = flat(problem.init_params)
    gi = np_grads(x, IDX)
    s = np.linalg.norm(gi, axis=1)
    p = np.exp(lam * (s - s.max()))
    p /= p.sum()
    d = nrm(p @ gi)
    gp = np_grads(x + rho * d, IDX)
    want = p @ gp if descent else gp.mean(0)
    np.testing.assert_allclose(jax_G(variant, problem, IDX)[0], want, rtol=1e-10)


def test_rw_sam_with_zero_temperature_is_sam():
    problem = make_problem()
    for score in ("finite_difference", "exact"):
        got = jax_G(V.rw_sam(0.1, inverse_temperature=0.0, score=score), problem, IDX)[0]
        np.testing.assert_allclose(got, jax_G(V.sam(0.1), problem, IDX)[0], rtol=1e-10)


def test_rw_sam_large_temperature_concentrates_on_the_largest_score():
    problem = make_problem()
    params = problem.init_params
    batch = problem.take(jnp.asarray(IDX))
    variant = V.rw_sam(0.1, inverse_temperature=1e4, score="exact")
    losses = problem.example_losses(params, batch)
    w = np.asarray(variant.rule.reweighting(problem, params, batch, losses, jr.key(0)))  # pyright: ignore[reportAttributeAccessIssue]
    s = np.linalg.norm(np_grads(flat(params), IDX), axis=1)
    assert np.argmax(w) == np.argmax(s)
    assert w.max() > 1 - 1e-6
    assert np.all(np.isfinite(w))


def test_finite_difference_score_is_abs_z_dot_g_to_first_order_in_delta():
    problem = make_problem()
    params = problem.init_params
    batch = problem.take(jnp.asarray(IDX))
    losses = problem.example_losses(params, batch)
    key = jr.key(3)
    z = flat(rademacher_like(key, params))  # the Rademacher z the variant draws from this key
    assert set(np.unique(z)) == {-1.0, 1.0}
    exact = np.abs(np_grads(flat(params), IDX) @ z)
    errs = []
    for delta in (1e-2, 5e-3, 2.5e-3):
        s = np.asarray(V.rw_sam(0.1, fd_delta=delta).rule.scores(problem, params, batch, losses, key))  # pyright: ignore[reportAttributeAccessIssue]
        errs.append(np.max(np.abs(s - exact)))
    assert errs[0] < 0.2  # O(delta) with a curvature constant of order 10
    ratios = np.array(errs[:-1]) / np.array(errs[1:])
    np.testing.assert_allclose(ratios, 2.0, rtol=0.1)  # halving delta halves the error: first order


@pytest.mark.parametrize("name", ["sam", "n-sam", "m-sam", "f-sam", "sam-on", "rw-sam"])
def test_normalized_variants_are_finite_at_a_zero_gradient(name):
    problem = ss.problems.quadratic(spectrum=(2.0, 1.0), n=8, noise_scale=0.0, init_scale=0.0).with_dtype(jnp.float64)
    kwargs = {"micro_batch_size": 2} if name == "m-sam" else {}
    if name == "sam-on":
        kwargs = {"mask": lambda p: True}
    variant = V.get(name, rho=0.1, **kwargs)
    G, _, _ = variant.gradient(
        problem, problem.init_params, variant.init(problem.init_params), problem.take(jnp.arange(4)), jr.key(0)
    )
    assert np.all(np.asarray(G) == 0.0)


def test_get_by_name_and_unknown_name():
    assert V.get("M_SAM", rho=0.1, micro_batch_size=2) == V.m_sam(0.1, 2)
    with pytest.raises(ValueError, match=r"unknown variant 'adam'.*valid names"):
        V.get("adam")


def test_optax_sgd_chain_equals_the_plain_step():
    problem = make_problem()
    variant = V.m_sam(0.1, 2)
    stepper = ss.with_optax(problem, variant, optax.sgd(0.05))
    state = stepper.init(problem.init_params)
    batch = problem.take(jnp.asarray(IDX))
    new, _ = jax.jit(stepper.step)(state, batch, jr.key(0))
    G, _ = jax_G(variant, problem, IDX)
    np.testing.assert_allclose(flat(new.params), flat(problem.init_params) - 0.05 * G, rtol=1e-12)


def test_optax_momentum_chain_with_m_sam_direction():
    """m-SAM direction + heavy-ball momentum: v_k = beta v_{k-1} + G_k, x_{k+1} = x_k - eta v_k."""
    problem = make_problem()
    variant = V.m_sam(0.1, 4)
    eta, beta = 0.05, 0.9
    stepper = ss.with_optax(problem, variant, optax.sgd(eta, momentum=beta))
    state = stepper.init(problem.init_params)
    step = jax.jit(stepper.step)
    x, v = flat(problem.init_params), np.zeros(D + 1)
    rng = np.random.default_rng(2)
    for _ in range(3):
        idx = rng.choice(N, B, replace=False)
        state, _ = step(state, problem.take(jnp.asarray(idx)), jr.key(0))
        terms = []
        for j in range(2):
            mb = idx[4 * j : 4 * j + 4]
            terms.append(np_grads(x + 0.1 * nrm(np_grads(x, mb).mean(0)), mb).mean(0))
        v = beta * v + np.mean(terms, axis=0)
        x = x - eta * v
        np.testing.assert_allclose(flat(state.params), x, rtol=1e-10)


def test_rw_sam_weighted_descent_at_zero_rho_is_the_weighted_gradient():
    """At rho = 0 the weighted-descent reading still steps along sum_i p_i g_i, not the plain mean."""
    problem = make_problem()
    lam = 0.8
    gi = np_grads(flat(problem.init_params), IDX)
    s = np.linalg.norm(gi, axis=1)
    p = np.exp(lam * (s - s.max()))
    p /= p.sum()
    got = jax_G(V.rw_sam(0.0, inverse_temperature=lam, score="exact", weights_in_descent=True), problem, IDX)[0]
    np.testing.assert_allclose(got, p @ gi, rtol=1e-10)


# -- RW-SAM scores: probes, relative scores, effective sample size ---------------------------------------------


def _rw_batch(n=256):
    pr = ss.problems.digits_mlp(hidden=16)
    return pr, pr.take(jnp.arange(n))


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_rw_score_correlation_with_gradient_norm_rises_with_probes():
    """The finite-difference score is about ``|z . g_i|`` (plus ``(delta/2) z^T H_i z``); for Rademacher ``z``,
    ``E|z . g| ~ sqrt(2/pi) ||g||`` with variance ``(1 - 2/pi) ||g||^2``, so the mean over ``P`` probes has
    ``corr(s, ||g||) ~ (1 + (pi/2 - 1) E||g||^2 / (P Var||g||))^{-1/2}``. Measured on 256 examples of a digits
    MLP at its initialisation: the correlation rises from 1 to 16 probes, and at 16 probes is within 0.15 of the
    prediction (the sampling error of a correlation over 256 examples is about 0.05)."""
    pr, batch = _rw_batch()
    x = pr.init_params
    norms = np.asarray(
        jnp.sqrt(
            sum(
                jnp.sum(a.reshape(a.shape[0], -1) ** 2, 1)
                for a in jax.tree_util.tree_leaves(pr.per_example_grads(x, batch))
            )
        )
    )
    losses = pr.example_losses(x, batch)
    corr = {}
    for probes in (1, 16):
        rule = ss.variants.rw_sam(0.05, num_probes=probes).rule
        s = np.asarray(rule.scores(pr, x, batch, losses, jr.key(3)))  # pyright: ignore[reportAttributeAccessIssue]
        corr[probes] = np.corrcoef(s, norms)[0, 1]
    predicted = (1 + (np.pi / 2 - 1) * np.mean(norms**2) / (16 * np.var(norms))) ** -0.5
    assert corr[16] > corr[1] + 0.1, corr
    assert abs(corr[16] - predicted) < 0.15, (corr, predicted)


def test_rw_one_probe_is_the_unchanged_stream_and_relative_scores_are_scale_free():
    pr, batch = _rw_batch(64)
    x = pr.init_params
    losses = pr.example_losses(x, batch)
    one = ss.variants.rw_sam(0.05).rule
    explicit = ss.variants.rw_sam(0.05, num_probes=1).rule
    np.testing.assert_array_equal(
        one.scores(pr, x, batch, losses, jr.key(1)),  # pyright: ignore[reportAttributeAccessIssue]
        explicit.scores(pr, x, batch, losses, jr.key(1)),  # pyright: ignore[reportAttributeAccessIssue]
    )
    rel = ss.variants.rw_sam(0.05, inverse_temperature=3.0, relative_scores=True).rule
    w = rel.reweighting(pr, x, batch, losses, jr.key(1))  # pyright: ignore[reportAttributeAccessIssue]
    s = np.asarray(one.scores(pr, x, batch, losses, jr.key(1)), np.float64)  # pyright: ignore[reportAttributeAccessIssue]
    want = np.exp(3.0 * s / s.mean())
    np.testing.assert_allclose(np.asarray(w), want / want.sum(), rtol=1e-4)
    # scaling the loss by 10 scales raw scores by 10 (weights change) but leaves relative weights unchanged
    scaled = ss.Problem(lambda p, ex: 10.0 * pr.loss_fn(p, ex), pr.data, pr.init_params, name="scaled")
    w10 = rel.reweighting(scaled, x, batch, scaled.example_losses(x, batch), jr.key(1))  # pyright: ignore[reportAttributeAccessIssue]
    np.testing.assert_allclose(np.asarray(w10), np.asarray(w), rtol=2e-3, atol=1e-7)
    raw = ss.variants.rw_sam(0.05, inverse_temperature=3.0).rule
    w_raw = raw.reweighting(pr, x, batch, losses, jr.key(1))  # pyright: ignore[reportAttributeAccessIssue]
    w_raw10 = raw.reweighting(scaled, x, batch, scaled.example_losses(x, batch), jr.key(1))  # pyright: ignore[reportAttributeAccessIssue]
    assert np.max(np.abs(np.asarray(w_raw10) - np.asarray(w_raw))) > 1e-3


def test_effective_sample_size_is_kish_formula():
    pr, batch = _rw_batch(64)
    x = pr.init_params
    for lam in (0.0, 1.0, 30.0):
        rule = ss.variants.rw_sam(0.05, inverse_temperature=lam, relative_scores=True).rule
        ess = float(rule.effective_sample_size(pr, x, batch, jr.key(2)))
        p = np.asarray(rule.reweighting(pr, x, batch, pr.example_losses(x, batch), jr.key(2)), np.float64)  # pyright: ignore[reportAttributeAccessIssue]
        np.testing.assert_allclose(ess, 1.0 / np.sum(p**2), rtol=1e-5)
        assert 1.0 - 1e-6 <= ess <= 64 + 1e-3
        if lam == 0.0:
            np.testing.assert_allclose(ess, 64.0, rtol=1e-5)
    assert float(ss.variants.effective_sample_size(jnp.asarray([1.0, 0.0, 0.0]))) == 1.0


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_rw_num_probes_must_be_a_positive_integer(bad):
    with pytest.raises((ValueError, TypeError), match="num_probes"):  # TypeError: the runtime type check
        ss.variants.rw_sam(0.05, num_probes=bad)


def test_expected_effective_sample_size_against_numpy():
    """``noise.expected_effective_sample_size`` is the mean over drawn batches of ``1 / sum p_i^2`` with
    ``p = softmax(lambda ||g_i||)`` (exact score, gradients by numpy); ``B`` exactly for a rule without weights."""
    problem = make_problem()
    x = problem.init_params
    xf = flat(x)
    sampler = ss.WithoutReplacement(B)
    key = jr.key(4)
    lam = 2.0
    rw = V.rw_sam(0.1, inverse_temperature=lam, score="exact")
    got = ss.noise.expected_effective_sample_size(rw, problem, x, sampler, key, num_batches=6)
    ess = []
    for k in jr.split(key, 6):  # the estimator's batch draws: one key per batch, its first half draws the batch
        idx = np.asarray(jr.choice(jr.split(k)[0], N, (B,), replace=False))
        s = np.linalg.norm(np_grads(xf, idx), axis=1)
        p = np.exp(lam * (s - s.max()))
        p /= p.sum()
        ess.append(1.0 / np.sum(p**2))
    ess = np.asarray(ess)
    np.testing.assert_allclose(float(got.value), ess.mean(), rtol=1e-10)
    np.testing.assert_allclose(float(got.stderr), ess.std(ddof=1) / np.sqrt(6), rtol=1e-8)
    assert ess.min() < B - 0.5  # the weights are far from uniform here, so the check is not B == B
    flat_ = ss.noise.expected_effective_sample_size(V.sam(0.1), problem, x, sampler, key, num_batches=4)
    assert float(flat_.value) == B and float(flat_.stderr) == 0.0
    with pytest.raises(ValueError, match="num_batches"):
        ss.noise.expected_effective_sample_size(rw, problem, x, sampler, key, num_batches=1)
    with pytest.raises(TypeError, match="rule"):
        ss.noise.expected_effective_sample_size("rw-sam", problem, x, sampler, key)


@pytest.mark.parametrize("name", V.NAMES)
def test_a_variant_is_rebuilt_from_its_recorded_config(name):
    """``Variant.from_config(v.config())`` is ``v`` after a JSON round trip, for every built-in variant."""
    import json

    kwargs = {} if name == "sgd" else {"rho": 0.07}
    if name in ("m-sam", "m-usam"):
        kwargs["micro_batch_size"] = 4
    v = V.get(name, **kwargs)
    config = json.loads(json.dumps(v.config()))
    assert V.Variant.from_config(config) == v


@dataclasses.dataclass(frozen=True)
class ScaledAscent(V.BatchGradient):
    """A user's rule defined in a module (another module may define a class of the same name)."""

    scale: float = 2.0


def test_from_config_finds_a_users_rule_and_refuses_what_a_config_cannot_rebuild():

    @dataclasses.dataclass(frozen=True)
    class LocalAscentOfThisTest(V.BatchGradient):  # a user's rule in a function: found by its class name
        scale: float = 2.0

    local = V.Variant("scaled-SAM", rho=0.1, rule=LocalAscentOfThisTest(scale=3.0))
    assert local.config()["rule"]["type"] == "LocalAscentOfThisTest"
    assert V.Variant.from_config(local.config()) == local
    v = V.Variant("scaled-SAM", rho=0.1, rule=ScaledAscent(scale=3.0))  # a module's: named module:qualname
    assert v.config()["rule"]["type"] == f"{__name__}:ScaledAscent"
    assert V.Variant.from_config(v.config()) == v
    with pytest.raises(ValueError, match=r"cannot be imported"):
        V.Variant.from_config(v.config() | {"rule": {"type": f"{__name__}:NoSuchRule"}})
    with pytest.raises(ValueError, match=r"'Nope' is not a defined class; known: .*BatchGradient"):
        V.Variant.from_config(v.config() | {"rule": {"type": "Nope"}})
    lam = V.Variant("SAM-ON", rho=0.1, mask=lambda path: True)
    with pytest.raises(ValueError, match=r"cannot be rebuilt from a config .*pass mask="):
        V.Variant.from_config(lam.config())
    pytree = V.sam_on(0.1, mask={"a": True, "b": False})
    with pytest.raises(ValueError, match=r"cannot be rebuilt from a config .*pass mask="):
        V.Variant.from_config(pytree.config())  # its repr holds colons, but names no predicate
    with pytest.raises(ValueError, match=r"names no importable predicate"):
        V.Variant.from_config(pytree.config() | {"mask": "sde_sam.variants:no_such_mask"})
    again = V.Variant.from_config(pytree.config(), mask={"a": True, "b": False})
    assert again == pytree
    with pytest.raises(ValueError, match=r"must be a Variant\.config"):
        V.Variant.from_config({"rho": 0.1})
