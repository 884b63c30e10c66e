"""MNIST-1D (Greydanus 2020): 4000 training and 1000 test signals of length 40, 10 classes, generated offline by the
``mnist1d`` package (``make_dataset(get_dataset_args())``, the package's default arguments; no download).

Two networks: :func:`mnist1d_mlp` (the LayerNorm MLP of :func:`~sde_sam.problems.digits_mlp`) and
:func:`mnist1d_cnn` (1-D convolutions with GroupNorm, global average pooling, a dense output layer).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._checks import check_integer
from ._builtin import _channels, _widths, layer_norm_mlp, softmax_cross_entropy
from ._problem import Problem


@functools.cache
def _generated(seed: int) -> tuple[np.ndarray, ...]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed  # pyright: ignore[reportAttributeAccessIssue]
    d = make_dataset(args)
    return (
        np.asarray(d["x"], np.float32),
        np.asarray(d["y"], np.int32),
        np.asarray(d["x_test"], np.float32),
        np.asarray(d["y_test"], np.int32),
    )


def load_mnist1d_split(seed: int = 42, label_noise: float = 0.0) -> tuple[dict, dict]:
    """MNIST-1D as train/test dicts of ``image`` (float32, 40) and ``label`` (int32): 4000 and 1000 examples,
    generated for ``seed`` (42: the package's default data set). ``label_noise``: fraction of training labels
    replaced by uniformly random classes (fixed by ``seed``)."""
    if not 0 <= label_noise <= 1:
        raise ValueError(f"`label_noise` must be a fraction in [0, 1], got {label_noise!r}")
    x, y, x_test, y_test = _generated(int(seed))
    y = y.copy()
    if label_noise > 0:
        rng = np.random.default_rng(seed + 1)
        flip = rng.random(y.size) < label_noise
        y[flip] = rng.integers(0, 10, int(flip.sum()))

    def mk(xx, yy):
        return {"image": jnp.asarray(xx), "label": jnp.asarray(yy)}

    return mk(x, y), mk(x_test, y_test)


def mnist1d_mlp(
    hidden: int | tuple[int, ...] = 32, seed: int = 0, data_seed: int = 42, label_noise: float = 0.0
) -> Problem:
    """The LayerNorm MLP of :func:`~sde_sam.problems.digits_mlp` on MNIST-1D (input 40, output 10); ``seed``
    initialises the network, ``data_seed`` generates the data."""
    widths = _widths(hidden)
    train, test = load_mnist1d_split(data_seed, label_noise)
    name = "mnist1d_mlp_" + "x".join(map(str, widths)) + (f"_noise{label_noise:g}" if label_noise else "")
    return layer_norm_mlp(train, test, widths, seed, name)


def _group_norm(h, p, groups: int, eps: float = 1e-5):
    """GroupNorm of ``h`` (length, channels) over each group of channels and the length."""
    length, c = h.shape
    g = h.reshape(length, groups, c // groups)
    mu = g.mean(axis=(0, 2), keepdims=True)
    var = jnp.square(g - mu).mean(axis=(0, 2), keepdims=True)
    return ((g - mu) * jax.lax.rsqrt(var + eps)).reshape(length, c) * p["scale"] + p["bias"]


def mnist1d_cnn(
    channels: tuple[int, ...] = (8, 16),
    kernel: int = 5,
    groups: int = 4,
    seed: int = 0,
    data_seed: int = 42,
    label_noise: float = 0.0,
) -> Problem:
    """A small 1-D CNN on MNIST-1D: per width in ``channels`` a convolution (``kernel`` taps, stride 2, same
    padding), GroupNorm (``groups`` groups) and ReLU; then the mean over the length and a dense output layer."""
    channels = _channels(channels)
    check_integer("kernel", kernel)
    check_integer("groups", groups)
    if any(c % groups for c in channels):
        raise ValueError(f"`groups`={groups} must divide every channel count {channels}")
    train, test = load_mnist1d_split(data_seed, label_noise)
    keys = jr.split(jr.key(seed), len(channels) + 1)
    params, c_in = {}, 1
    for i, c in enumerate(channels):
        w = jr.normal(keys[i], (kernel, c_in, c), jnp.float32) * math.sqrt(2.0 / (kernel * c_in))
        params[f"conv_{i}"] = {"w": w, "b": jnp.zeros(c, jnp.float32)}
        params[f"group_norm_{i}"] = {"scale": jnp.ones(c, jnp.float32), "bias": jnp.zeros(c, jnp.float32)}
        c_in = c
    params["dense_out"] = {
        "w": jr.normal(keys[-1], (c_in, 10), jnp.float32) * math.sqrt(2.0 / c_in),
        "b": jnp.zeros(10, jnp.float32),
    }
    num = len(channels)

    def logits_fn(p, signal):
        h = signal[None, :, None]  # (batch 1, length, channels 1)
        for i in range(num):
            h = (
                jax.lax.conv_general_dilated(
                    h, p[f"conv_{i}"]["w"], (2,), "SAME", dimension_numbers=("NWC", "WIO", "NWC")
                )
                + p[f"conv_{i}"]["b"]
            )
            h = jax.nn.relu(_group_norm(h[0], p[f"group_norm_{i}"], groups))[None]
        return h[0].mean(axis=0) @ p["dense_out"]["w"] + p["dense_out"]["b"]

    def loss_fn(p, ex):
        return softmax_cross_entropy(logits_fn(p, ex["image"]), ex["label"])

    def accuracy_fn(p, ex):
        return (jnp.argmax(logits_fn(p, ex["image"])).astype(ex["label"].dtype) == ex["label"]).astype(jnp.float32)

    name = f"mnist1d_cnn_{'x'.join(map(str, channels))}" + (f"_noise{label_noise:g}" if label_noise else "")
    return Problem(loss_fn, train, params, name, accuracy_fn, test)
