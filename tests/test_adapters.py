"""Problems from equinox and flax models against the same network written by hand as a plain pytree problem."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import sde_sam as ss
from sde_sam._problems._problem import path_name

eqx = pytest.importorskip("equinox")
nnx = pytest.importorskip("flax.nnx")
linen = pytest.importorskip("flax.linen")

N, DIN, H = 24, 3, 5


def _data():
    rng = np.random.default_rng(0)
    return {
        "x": jnp.asarray(rng.standard_normal((N, DIN)), jnp.float32),
        "y": jnp.asarray(rng.standard_normal(N), jnp.float32),
    }


def _hand_problem(W1, b1, W2, b2, data):
    """``f_i = (w2 . tanh(W1 x_i + b1) + b2 - y_i)^2 / 2`` on the tuple ``(W1, b1, W2, b2)``; ``W1`` is (H, DIN) as
    in equinox (``kernel_layout="out_in"``) or (DIN, H) as in flax (``"in_out"``)."""
    out_in = W1.shape == (H, DIN)

    def loss(p, ex):
        w1, c1, w2, c2 = p
        h = jnp.tanh((w1 @ ex["x"] if out_in else ex["x"] @ w1) + c1)
        out = (w2 @ h if w2.shape[0] == 1 else h @ w2) + c2
        return 0.5 * (out[0] - ex["y"]) ** 2

    return ss.Problem(loss, data, (W1, b1, W2, b2), name="hand")


def _squared(model, ex):
    return 0.5 * (model(ex["x"])[0] - ex["y"]) ** 2


def _same_everywhere(adapted: ss.Problem, hand: ss.Problem):
    """The adapted problem computes what the hand-written one does: losses and gradients, a SAM step, tr Sigma,
    the top Hessian eigenvalue, a discrete run and an SDE simulation (same keys), all in the raveled parameters."""
    flat = lambda t: np.asarray(ravel_pytree(t)[0])  # noqa: E731
    np.testing.assert_allclose(flat(adapted.init_params), flat(hand.init_params))
    np.testing.assert_allclose(adapted.full_loss(adapted.init_params), hand.full_loss(hand.init_params), rtol=1e-6)
    np.testing.assert_allclose(
        flat(adapted.full_grad(adapted.init_params)), flat(hand.full_grad(hand.init_params)), rtol=1e-5, atol=1e-7
    )
    batch_a, batch_h = adapted.take(jnp.arange(8)), hand.take(jnp.arange(8))
    sam = ss.variants.sam(0.1)
    Ga = sam.gradient(adapted, adapted.init_params, (), batch_a, jr.key(0))[0]
    Gh = sam.gradient(hand, hand.init_params, (), batch_h, jr.key(0))[0]
    np.testing.assert_allclose(flat(Ga), flat(Gh), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        ss.noise.trace_sigma(adapted, adapted.init_params), ss.noise.trace_sigma(hand, hand.init_params), rtol=1e-5
    )
    la = ss.curvature.top_eigenvalues(adapted, adapted.init_params, 1, jr.key(1)).values
    lh = ss.curvature.top_eigenvalues(hand, hand.init_params, 1, jr.key(1)).values
    np.testing.assert_allclose(la, lh, rtol=1e-4)
    rec = ss.observables("loss", every=5)
    kw = {"eta": 0.1, "steps": 10, "num_runs": 2, "key": jr.key(2), "record": rec}
    ra = ss.run_discrete(adapted, sam, ss.WithReplacement(8), **kw)
    rh = ss.run_discrete(hand, sam, ss.WithReplacement(8), **kw)
    np.testing.assert_allclose(ra.values["loss"], rh.values["loss"], rtol=1e-5)
    assert ra.values["loss"][:, -1].mean() < ra.values["loss"][:, 0].mean()
    pa = ss.simulate(
        ss.sde_model(adapted, sam, ss.WithReplacement(8), eta=0.1), t1=0.5, num_paths=4, key=jr.key(3), record=rec
    )
    ph = ss.simulate(
        ss.sde_model(hand, sam, ss.WithReplacement(8), eta=0.1), t1=0.5, num_paths=4, key=jr.key(3), record=rec
    )
    np.testing.assert_allclose(pa.values["loss"], ph.values["loss"], rtol=1e-4)


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_equinox_mlp_equals_the_hand_written_network():
    data = _data()
    model = eqx.nn.MLP(DIN, 1, H, 1, activation=jnp.tanh, key=jr.key(0))
    adapted = ss.problems.from_equinox(_squared, data, model)
    l0, l1 = model.layers
    _same_everywhere(adapted, _hand_problem(l0.weight, l0.bias, l1.weight, l1.bias, data))


def test_equinox_paths_drive_a_sam_on_mask():
    """Parameter paths are the module's attribute paths: a SAM-ON mask on ``layers/1/bias`` perturbs that leaf only."""
    adapted = ss.problems.from_equinox(_squared, _data(), eqx.nn.MLP(DIN, 1, H, 1, key=jr.key(0)))
    v = ss.variants.sam_on(0.1, mask=lambda path: path == "layers/1/bias")
    eps = v.perturbations(adapted, adapted.init_params, (), adapted.take(jnp.arange(8)), jr.key(0))[0]
    norms = {path_name(p): float(jnp.linalg.norm(a)) for p, a in jax.tree_util.tree_flatten_with_path(eps)[0]}
    assert norms.pop("layers/1/bias") == pytest.approx(0.1, rel=1e-5)
    assert all(n == 0.0 for n in norms.values()), norms


def _reordered(base: ss.Problem) -> ss.Problem:
    """``base`` with its parameters in flax's order (by name: bias before kernel), so raveled vectors line up."""

    def order(p):
        return (p[1], p[0], p[3], p[2])

    return ss.Problem(lambda q, ex: base.loss_fn(order(q), ex), base.data, order(base.init_params), name="hand")


class _Net(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(DIN, H, rngs=rngs)
        self.l2 = nnx.Linear(H, 1, rngs=rngs)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_flax_nnx_module_equals_the_hand_written_network():
    data = _data()
    model = _Net(nnx.Rngs(0))
    adapted = ss.problems.from_flax(_squared, data, model)
    base = _hand_problem(model.l1.kernel[...], model.l1.bias[...], model.l2.kernel[...], model.l2.bias[...], data)
    _same_everywhere(adapted, _reordered(base))


class _Linen(linen.Module):
    @linen.compact
    def __call__(self, x):
        h = jnp.tanh(linen.Dense(H, name="hidden")(x))
        return linen.Dense(1, name="out")(h)


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_flax_linen_module_equals_the_hand_written_network():
    data = _data()
    model = _Linen()
    variables = model.init(jr.key(0), data["x"][0])
    adapted = ss.problems.from_flax(lambda apply, ex: 0.5 * (apply(ex["x"])[0] - ex["y"]) ** 2, data, model, variables)
    p = variables["params"]
    w = (p["hidden"]["bias"], p["hidden"]["kernel"], p["out"]["bias"], p["out"]["kernel"])
    _same_everywhere(adapted, _reordered(_hand_problem(w[1], w[0], w[3], w[2], data)))


def test_model_objects_without_their_adapter_are_refused_with_the_way_out():
    with pytest.raises(TypeError, match="from_equinox"):
        ss.Problem(_squared, _data(), eqx.nn.MLP(DIN, 1, H, 1, key=jr.key(0)))
    with pytest.raises(TypeError, match=r"equinox\.Module"):
        ss.problems.from_equinox(_squared, _data(), {"w": jnp.ones(3)})
    with pytest.raises(TypeError, match=r"nnx\.Module or linen"):
        ss.problems.from_flax(_squared, _data(), object())
    with pytest.raises(ValueError, match="variables"):
        ss.problems.from_flax(_squared, _data(), _Linen())
