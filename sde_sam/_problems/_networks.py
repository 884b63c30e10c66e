"""A small CNN on scikit-learn's 8x8 digits (DESIGN §6.3), with LayerNorm, GroupNorm or BatchNorm.

``conv_0 (3x3, c0) -> norm_0 -> relu -> conv_1 (3x3, stride 2, c1) -> norm_1 -> relu -> mean pool -> dense_out``,
softmax cross-entropy. Normalization parameters live under ``<kind>_norm_<i>/{scale,bias}``, so SAM-ON's
default mask (:func:`sde_sam.variants.is_normalization_param`) selects them.

LayerNorm and GroupNorm act on one example at a time, so ``f_i`` is a genuine per-example loss and every
SDE quantity (``Sigma``, per-example gradients) is defined. BatchNorm is not: an example's loss depends on
the rest of its batch. :class:`BatchNormProblem` therefore overrides ``example_losses(params, batch)`` to
normalize with the statistics *of the batch it is given* (training-mode BatchNorm; m-SAM's micro-batches get
their own statistics, "ghost" BatchNorm), ``full_loss``/``accuracy`` use the statistics of all training data
(population statistics), and the test set is evaluated with the training-data statistics. Its
``loss_fn(params, example)`` normalizes one example with its own spatial statistics only, so per-example
quantities (exact ``tr Sigma``, per-example gradients) are *not* meaningful for it; use the mini-batch
estimator ``sde_sam.noise.trace_sigma_minibatch`` (covariance of batch gradients, BatchNorm included), as
:mod:`sde_sam.train` does. It is meant for SAM-ON rows, not for SDE comparisons.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import jax.random as jr
from jax import Array

from .._checks import Literal, check_integer, choose
from .._pytree import fields_pytree
from ._builtin import _channels, load_digits_split, softmax_cross_entropy
from ._problem import PROBLEM_LEAVES, PROBLEM_STATIC, Problem


def _conv_init(key, k, c_in, c_out):
    w = jr.normal(key, (k, k, c_in, c_out), jnp.float32) * math.sqrt(2.0 / (k * k * c_in))
    return {"w": w, "b": jnp.zeros(c_out, jnp.float32)}


def _conv(x, p, stride):
    """``x``: ``(N, H, W, C)``; 3x3 SAME convolution."""
    out = jax.lax.conv_general_dilated(x, p["w"], (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return out + p["b"]


def _affine(x, p):
    return x * p["scale"] + p["bias"]


class _NoNorm:
    """A CNN layer's normalization, by its name in ``norm=`` (:data:`_NORMS`): here none. ``x``: ``(N, H, W, C)``;
    ``stats``: another batch's statistics (only BatchNorm uses them)."""

    eps = 1e-5
    #: whether it has a scale and a bias per channel (``<kind>_norm_<i>``)
    affine = False
    #: whether a batch's examples interact through it (then the problem is a :class:`BatchNormProblem`)
    couples_examples = False

    def check(self, channels: tuple[int, ...], groups: int) -> None:
        """Refuse a layout it cannot normalize."""

    def statistics(self, x) -> tuple[Array, Array] | None:
        """What this normalization takes from another batch (``stats_images``): nothing."""
        return None

    def __call__(self, x, p, groups, stats=None):
        return x


class _LayerNorm(_NoNorm):
    """Over (H, W, C) per example."""

    affine = True

    def __call__(self, x, p, groups, stats=None):
        mu = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
        var = jnp.var(x, axis=(1, 2, 3), keepdims=True)
        return _affine((x - mu) * jax.lax.rsqrt(var + self.eps), p)


class _GroupNorm(_NoNorm):
    """Over (H, W, C/G) per example and group."""

    affine = True

    def check(self, channels: tuple[int, ...], groups: int) -> None:
        if any(c % groups for c in channels):
            raise ValueError(f"`groups`={groups} must divide every channel count {channels} for GroupNorm")

    def __call__(self, x, p, groups, stats=None):
        n, h, w, c = x.shape
        xg = x.reshape(n, h, w, groups, c // groups)
        mu = jnp.mean(xg, axis=(1, 2, 4), keepdims=True)
        var = jnp.var(xg, axis=(1, 2, 4), keepdims=True)
        return _affine(((xg - mu) * jax.lax.rsqrt(var + self.eps)).reshape(n, h, w, c), p)


class _BatchNorm(_NoNorm):
    """Over (N, H, W) per channel, with ``stats`` ``(mean, var)`` instead of the batch's when given."""

    affine = True
    couples_examples = True

    def statistics(self, x) -> tuple[Array, Array] | None:
        return jnp.mean(x, axis=(0, 1, 2)), jnp.var(x, axis=(0, 1, 2))

    def __call__(self, x, p, groups, stats=None):
        if stats is None:
            mu = jnp.mean(x, axis=(0, 1, 2))
            var = jnp.var(x, axis=(0, 1, 2))
        else:
            mu, var = stats
        return _affine((x - mu) * jax.lax.rsqrt(var + self.eps), p)


_NORMS = {"layer": _LayerNorm(), "group": _GroupNorm(), "batch": _BatchNorm(), "none": _NoNorm()}
NORMS = tuple(_NORMS)


class _CNN:
    """The forward pass on a batch of images ``(N, 64)``; BatchNorm statistics from ``stats_images`` if given."""

    def __init__(self, norm: str, groups: int, num_layers: int):
        self.norm, self.groups, self.num_layers = norm, groups, num_layers
        self.normalize = _NORMS[norm]

    def __call__(self, p, images, stats_images=None):
        h = images.reshape(-1, 8, 8, 1)
        hs = None if stats_images is None else stats_images.reshape(-1, 8, 8, 1)
        for i in range(self.num_layers):
            conv = p[f"conv_{i}"]
            stride = 1 if i == 0 else 2
            h = _conv(h, conv, stride)
            stats = None
            if hs is not None:
                hs = _conv(hs, conv, stride)
                stats = self.normalize.statistics(hs)
            norm_p = p.get(f"{self.norm}_norm_{i}")
            h = jax.nn.relu(self.normalize(h, norm_p, self.groups, stats=stats))
            if hs is not None:
                hs = jax.nn.relu(self.normalize(hs, norm_p, self.groups, stats=stats))
        pooled = jnp.mean(h, axis=(1, 2))
        return pooled @ p["dense_out"]["w"] + p["dense_out"]["b"]


class _BatchLosses:
    """``loss_fn`` of :class:`BatchNormProblem`: one example alone, plus ``.batch`` for a whole batch."""

    def __init__(self, net: _CNN):
        self.net = net

    def __call__(self, p, ex):
        return self.batch(p, jax.tree_util.tree_map(lambda a: a[None], ex))[0]

    def batch(self, p, batch, stats_images=None):
        logits = self.net(p, batch["image"], stats_images)
        return jax.vmap(softmax_cross_entropy)(logits, batch["label"])

    def correct(self, p, batch, stats_images=None):
        return (jnp.argmax(self.net(p, batch["image"], stats_images), axis=-1) == batch["label"]).astype(jnp.float32)


@fields_pytree(leaves=PROBLEM_LEAVES, static=PROBLEM_STATIC)
class BatchNormProblem(Problem):
    """A :class:`~sde_sam.Problem` whose examples interact through BatchNorm (see the module docstring).

    ``example_losses(params, batch)`` uses the batch's statistics, so ``batch_loss``/``batch_grad`` and every
    variant's step are training-mode BatchNorm; ``full_loss``/``full_grad``/``accuracy`` use all training data
    (chunking is ignored: BatchNorm statistics need the whole set); the test set uses training statistics."""

    @property
    def _losses(self) -> _BatchLosses:
        assert isinstance(self.loss_fn, _BatchLosses)
        return self.loss_fn

    def example_losses(self, params, batch):
        return self._losses.batch(params, batch)

    def full_loss(self, params, chunk_size=None):
        return jnp.mean(self._losses.batch(params, self.data))

    def test_loss(self, params):
        if self.test_data is None:
            raise ValueError(f"problem {self.name!r} has no test_data")
        return jnp.mean(self._losses.batch(params, self.test_data, self.data["image"]))

    def accuracy(self, params, data=None):
        if data is None:
            return jnp.mean(self._losses.correct(params, self.data))
        return jnp.mean(self._losses.correct(params, data, self.data["image"]))


def digits_cnn(
    channels: tuple[int, ...] = (8, 16),
    norm: Literal["layer", "group", "batch", "none"] = "group",
    groups: int = 4,
    seed: int = 0,
    test_fraction: float = 0.2,
    label_noise: float = 0.0,
) -> Problem:
    """A small CNN on scikit-learn's 8x8 digits (DESIGN §6.3); ``norm`` in ``"layer"``, ``"group"`` (``groups``
    groups, must divide every channel count), ``"batch"`` (a :class:`BatchNormProblem`) or ``"none"``.
    ``label_noise``: fraction of training labels replaced by random classes (fixed by ``seed``)."""
    kind = choose("norm", norm, _NORMS)
    channels = _channels(channels)
    check_integer("groups", groups)
    kind.check(channels, groups)
    train, test = load_digits_split(test_fraction, seed, label_noise)
    keys = jr.split(jr.key(seed), len(channels) + 1)
    params, c_in = {}, 1
    for i, c in enumerate(channels):
        params[f"conv_{i}"] = _conv_init(keys[i], 3, c_in, c)
        if kind.affine:
            params[f"{norm}_norm_{i}"] = {"scale": jnp.ones(c, jnp.float32), "bias": jnp.zeros(c, jnp.float32)}
        c_in = c
    params["dense_out"] = {
        "w": jr.normal(keys[-1], (c_in, 10), jnp.float32) * math.sqrt(2.0 / c_in),
        "b": jnp.zeros(10, jnp.float32),
    }
    net = _CNN(norm, groups, len(channels))
    name = f"digits_cnn_{'x'.join(map(str, channels))}_{norm}" + (f"_noise{label_noise:g}" if label_noise else "")
    if kind.couples_examples:
        losses = _BatchLosses(net)
        return BatchNormProblem(
            losses,
            train,
            params,
            name,
            lambda p, ex: losses.correct(p, jax.tree_util.tree_map(lambda a: a[None], ex))[0],
            test,
        )

    def loss_fn(p, ex):
        return softmax_cross_entropy(net(p, ex["image"][None])[0], ex["label"])

    def accuracy_fn(p, ex):
        return (jnp.argmax(net(p, ex["image"][None])[0]).astype(ex["label"].dtype) == ex["label"]).astype(jnp.float32)

    return Problem(loss_fn, train, params, name, accuracy_fn, test)


def is_batch_norm_problem(problem: Problem) -> bool:
    """True for problems whose examples interact through BatchNorm (no per-example loss)."""
    return isinstance(problem, BatchNormProblem)


__all__ = ["NORMS", "BatchNormProblem", "digits_cnn", "is_batch_norm_problem"]
