"""A problem's own micro-batch form of the m-SAM step (``Problem.micro_batch_gradient``; the low-rank form of
``digits_mlp``) against the generic ``k``-copy form, in float64 where they must agree to rounding."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_sam as ss

pytestmark = pytest.mark.usefixtures("x64")
V = ss.variants


def _problems(hidden):
    fast = ss.problems.digits_mlp(hidden=hidden).with_dtype(jnp.float64)
    return fast, dataclasses.replace(fast, micro_batch_gradient=None)


def _batch(problem, B=32, seed=0):
    return problem.take(jr.choice(jr.key(seed), problem.num_examples, (B,), replace=False))


def _leaves(t):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(t)]


def _moved_point(problem):
    """Three SGD steps from the initialisation: every LayerNorm gradient is nonzero there."""
    params, sgd = problem.init_params, jax.jit(problem.batch_grad)
    for s in range(3):
        params = jax.tree_util.tree_map(lambda p, g: p - 0.5 * g, params, sgd(params, _batch(problem, 64, s)))
    return params


def _assert_same_step(variant, fast, generic, params, batch):
    """G, the batch loss and the mean direction norm of the two forms agree (float64, 1e-10)."""
    G1, _, out1 = jax.jit(lambda p, b: variant.gradient(fast, p, (), b, jr.key(0)))(params, batch)
    G2, _, out2 = jax.jit(lambda p, b: variant.gradient(generic, p, (), b, jr.key(0)))(params, batch)
    for a, b in zip(_leaves(G1), _leaves(G2), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(out1.loss), float(out2.loss), rtol=1e-12)
    np.testing.assert_allclose(float(out1.direction_norm), float(out2.direction_norm), rtol=1e-10)


@pytest.mark.parametrize(
    "hidden, variant",
    [  # the two-layer case in the default suite, the others in the slow pass
        pytest.param(8, V.m_sam(0.1, 1), marks=pytest.mark.slow),
        pytest.param(8, V.m_usam(0.2, 2), marks=pytest.mark.slow),
        ((8, 6), V.m_sam(0.5, 4)),
    ],
    ids=["one-layer-m-SAM-m1", "one-layer-m-USAM-m2", "two-layers-m-SAM-m4"],
)
def test_low_rank_form_equals_the_generic_step(hidden, variant):
    """G, the batch loss and the mean direction norm equal the generic form's (float64, 1e-12), at a point away
    from the initialisation (a few SGD steps) so that every LayerNorm gradient is nonzero."""
    fast, generic = _problems(hidden)
    assert fast.micro_batch_gradient.applies(fast.loss_fn, fast.init_params, variant.rule.micro_batch_size)  # pyright: ignore[reportOptionalMemberAccess]
    params, batch = _moved_point(fast), _batch(fast)
    _assert_same_step(variant, fast, generic, params, batch)


def test_low_rank_form_differentiates_like_the_generic_step():
    """The directional derivative of ``x -> G(x)`` (what the order-2 drift ``(eta/2)(Db) b`` uses) is the
    generic form's: the perturbation's dependence on ``x`` is kept, not cut by a stop-gradient."""
    fast, generic = _problems(8)
    v, batch, x = V.m_sam(0.3, 4), _batch(fast), fast.init_params
    u = jax.tree_util.tree_map(lambda a: jnp.cos(jnp.arange(a.size, dtype=a.dtype)).reshape(a.shape), x)

    @jax.jit
    def dG(problem):
        return jax.jvp(lambda p: v.gradient(problem, p, (), batch, jr.key(0))[0], (x,), (u,))[1]

    for a, b in zip(_leaves(dG(fast)), _leaves(dG(generic)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


class _Counting(ss.problems.AbstractMicroBatchGradient):
    """Wraps a form and counts the traces that use it."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, params, batch, micro_batch_size, scale):
        self.calls += 1
        return self.inner(params, batch, micro_batch_size, scale)

    def applies(self, loss_fn, params, micro_batch_size):
        return self.inner.applies(loss_fn, params, micro_batch_size)

    def reweighted_gradient(self, params, batch, weights_of):
        self.calls += 1
        return self.inner.reweighted_gradient(params, batch, weights_of)


@pytest.mark.parametrize(
    "variant, used",
    [
        (V.m_sam(0.1, 4), True),
        (V.m_usam(0.1, 4), True),
        (V.sam(0.1), False),  # k = 1: the plain SAM step
        (V.m_sam(0.1, 32), False),  # m = B: k = 1
        (V.asam(0.1, micro_batch_size=4), False),  # a preconditioner
        (V.m_sam(0.1, 4).replace(mask=lambda path: path.startswith("dense_out")), False),  # a mask
        (V.m_sam(0.1, 4).replace(normalization=ss.variants.FullGradientNorm()), False),  # scale not of ||g_j||
        (V.dnsam(0.1), False),
        (V.rw_sam(0.1), False),  # the finite-difference score
        (V.rw_sam(0.1, score="exact"), True),
        (V.rw_sam(0.1, score="exact", weights_in_descent=True), True),
    ],
    ids=lambda x: getattr(x, "name", str(x)),
)
def test_the_form_is_used_exactly_for_the_plain_micro_batch_rule_and_exact_rw_sam(variant, used):
    fast, _ = _problems(8)
    counting = _Counting(fast.micro_batch_gradient)
    problem = dataclasses.replace(fast, micro_batch_gradient=counting)
    params, batch = problem.init_params, _batch(problem)
    jax.eval_shape(lambda p: variant.gradient(problem, p, variant.init(p), batch, jr.key(0)), params)  # traced only
    assert counting.calls == (1 if used else 0)


def test_the_form_applies_while_the_gram_terms_cost_at_most_the_layers():
    """``m sum(w_in + w_out) <= sum(w_in w_out)`` over the dense layers; by hand: digits_mlp(64) has layers
    64x64 and 64x10 (202 against 4736: m <= 23), digits_mlp(256) 64x256 and 256x10 (586 against 18944: m <= 32)."""
    for hidden, last in ((64, 23), (256, 32)):
        p = ss.problems.digits_mlp(hidden=hidden)
        form = p.micro_batch_gradient
        assert form.applies(p.loss_fn, p.init_params, last) and not form.applies(p.loss_fn, p.init_params, last + 1)  # pyright: ignore[reportOptionalMemberAccess]


@pytest.mark.slow
@pytest.mark.parametrize("variant", [V.m_sam(0.2, 4), V.rw_sam(0.2, score="exact")], ids=lambda v: v.name)
def test_run_discrete_trajectories_agree_with_the_generic_form(variant):
    """Whole runs (float64, 20 steps, 2 runs) end at the same parameters to rounding."""
    fast, generic = _problems(8)
    kw = {"eta": 0.2, "steps": 20, "num_runs": 2, "key": jr.key(3), "dtype": jnp.float64}
    a = ss.run_discrete(fast, variant, ss.WithoutReplacement(32), **kw)
    b = ss.run_discrete(generic, variant, ss.WithoutReplacement(32), **kw)
    for x, y in zip(_leaves(a.final_params), _leaves(b.final_params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-11)


def test_a_replaced_loss_runs_the_generic_form():
    """A problem built from digits_mlp with another ``loss_fn`` (here twice the loss) must not take the MLP's form,
    which knows only the original loss: its step is the generic one on the new loss."""
    fast, _ = _problems(8)
    doubled = dataclasses.replace(fast, loss_fn=lambda p, ex: 2.0 * fast.loss_fn(p, ex))
    counting = _Counting(fast.micro_batch_gradient)
    problem = dataclasses.replace(doubled, micro_batch_gradient=counting)
    batch = _batch(fast)
    for v in (V.m_sam(0.1, 4), V.rw_sam(0.1, score="exact")):
        _G, _, out = jax.jit(lambda p, b, v=v: v.gradient(problem, p, (), b, jr.key(0)))(fast.init_params, batch)
        assert counting.calls == 0
        np.testing.assert_allclose(float(out.loss), 2.0 * float(fast.batch_loss(fast.init_params, batch)), rtol=1e-12)


def test_a_problem_refuses_a_form_of_the_wrong_type():
    p = ss.problems.digits_mlp(hidden=8)
    with pytest.raises(TypeError, match="micro_batch_gradient"):
        dataclasses.replace(p, micro_batch_gradient=lambda *a: None)


@pytest.mark.parametrize(
    "hidden, variant",
    [
        pytest.param(8, V.rw_sam(0.1, score="exact"), marks=pytest.mark.slow),
        pytest.param(8, V.rw_sam(0.1, score="exact", weights_in_descent=True), marks=pytest.mark.slow),
        ((8, 6), V.rw_sam(0.2, score="exact", relative_scores=True, inverse_temperature=3.0)),
    ],
    ids=["one-layer", "one-layer-weighted-descent", "two-layers-relative-scores"],
)
def test_rw_sam_exact_score_form_equals_per_example_gradients(hidden, variant):
    """RW-SAM with the exact score ``||g_i||``: the MLP's form (``||a_i||^2 ||delta_i||^2`` per dense layer and
    ``A^T diag(p) Delta``) gives the step of the generic per-example gradients (float64, 1e-10), with weights far
    from uniform (so a wrong score changes G), at a point where every LayerNorm gradient is nonzero."""
    fast, generic = _problems(hidden)
    params, batch = _moved_point(fast), _batch(fast)
    rule = variant.rule
    g = generic.per_example_grads(params, batch)
    norms = jnp.sqrt(sum(jnp.sum(jnp.square(a.reshape(32, -1)), 1) for a in jax.tree_util.tree_leaves(g)))
    weights = np.asarray(rule.weights_of_scores(norms))
    assert 1.0 / np.sum(weights**2) < 0.9 * 32, weights  # the effective sample size is well below B
    _assert_same_step(variant, fast, generic, params, batch)
