"""Built-in finite-sum problems (DESIGN §1; issue "Foundation" item 2).

Every builder is deterministic given ``seed`` and returns a :class:`~sde_sam.Problem`. Real data comes
from scikit-learn's bundled datasets (nothing is downloaded).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._checks import Literal, check_integer, check_number, choose
from ._micro_batch import DenseLayerNormMLP
from ._problem import Problem


def _split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if not 0 <= test_fraction < 1:
        raise ValueError(f"`test_fraction` must be in [0, 1), got {test_fraction!r}")
    perm = np.random.default_rng(seed).permutation(n)
    n_test = round(n * test_fraction)
    return perm[n_test:], perm[:n_test]


# -- (a) quadratic -------------------------------------------------------------------------------------


def quadratic(
    spectrum=(10.0, 1.0, 0.1),
    n: int = 64,
    noise_scale: float = 1.0,
    hessian_noise: float = 0.0,
    seed: int = 0,
    init_scale: float = 1.0,
) -> Problem:
    """``f_i(x) = (1/2) sum_j h_j s_ij (x_j - z_ij)^2``: a quadratic with eigenvalues ``spectrum`` (sharp and
    flat directions), per-example minimizers ``z_i ~ N(0, noise_scale^2 I)`` and per-example curvature
    scales ``s_ij = 1 + hessian_noise * u_ij`` (``u`` centred uniform on [-1, 1], so ``E s = 1``)."""
    spectrum = np.asarray(spectrum, dtype=np.float64)
    if spectrum.ndim != 1 or spectrum.size == 0 or not np.all(np.isfinite(spectrum)) or np.any(spectrum < 0):
        raise ValueError(f"`spectrum` must be a non-empty 1-D sequence of finite numbers >= 0, got {spectrum!r}")
    check_integer("n", n)
    check_number("noise_scale", noise_scale)
    if not (isinstance(hessian_noise, (int, float)) and 0 <= hessian_noise < 1):
        raise ValueError(f"`hessian_noise` must be in [0, 1) (curvature scales stay positive), got {hessian_noise!r}")
    d = spectrum.size
    rng = np.random.default_rng(seed)
    z = noise_scale * rng.standard_normal((n, d))
    u = rng.uniform(-1, 1, (n, d))
    u -= u.mean(axis=0)  # exact: mean_i s_ij = 1, so the mean Hessian is diag(spectrum)
    s = 1.0 + hessian_noise * u / max(1.0, np.abs(u).max())

    def loss_fn(x, ex):  # the spectrum in the parameters' dtype (float64 twins keep it exact)
        h = jnp.asarray(spectrum, jnp.result_type(x))
        return 0.5 * jnp.sum(h * ex["scale"] * jnp.square(x - ex["center"]))

    data = {"center": jnp.asarray(z, jnp.float32), "scale": jnp.asarray(s, jnp.float32)}
    x0 = jnp.asarray(init_scale * np.ones(d), jnp.float32)
    return Problem(loss_fn, data, x0, name=f"quadratic_d{d}")


# -- (b) linear regression ------------------------------------------------------------------------------


def linear_regression(
    n: int = 256, d: int = 16, label_noise: float = 0.5, seed: int = 0, init_scale: float = 1.0
) -> Problem:
    """``f_i(w) = (1/2)(a_i^T w - y_i)^2`` with ``a_i ~ N(0, I_d)``, ``y_i = a_i^T w* + label_noise * e_i``,
    ``w* ~ N(0, I/d)``; the initial point is ``w* + init_scale * N(0, I/d)``."""
    check_integer("n", n)
    check_integer("d", d)
    check_number("label_noise", label_noise)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, d))
    w_star = rng.standard_normal(d) / math.sqrt(d)
    y = a @ w_star + label_noise * rng.standard_normal(n)
    w0 = w_star + init_scale * rng.standard_normal(d) / math.sqrt(d)

    def loss_fn(w, ex):
        return 0.5 * jnp.square(jnp.dot(ex["a"], w) - ex["y"])

    data = {"a": jnp.asarray(a, jnp.float32), "y": jnp.asarray(y, jnp.float32)}
    return Problem(loss_fn, data, jnp.asarray(w0, jnp.float32), name=f"linreg_n{n}_d{d}")


# -- (c) logistic regression on breast_cancer ---------------------------------------------------------


def breast_cancer_logistic(l2: float = 0.0, test_fraction: float = 0.2, seed: int = 0) -> Problem:
    """Logistic regression ``f_i = log(1 + exp(-y_i (w^T a_i + b))) + (l2/2)||w||^2`` on scikit-learn's bundled
    breast_cancer (569 x 30, standardized with the training split's mean and std, ``y in {-1, +1}``)."""
    from sklearn.datasets import load_breast_cancer

    check_number("l2", l2)
    features, target = (np.asarray(v) for v in load_breast_cancer(return_X_y=True))
    train, test = _split(features.shape[0], test_fraction, seed)
    mu, sd = features[train].mean(axis=0), features[train].std(axis=0)
    a = (features - mu) / sd
    y = 2.0 * target - 1.0

    def loss_fn(p, ex):
        margin = ex["y"] * (jnp.dot(ex["a"], p["w"]) + p["b"])
        return jax.nn.softplus(-margin) + 0.5 * l2 * jnp.sum(jnp.square(p["w"]))

    def accuracy_fn(p, ex):
        return (ex["y"] * (jnp.dot(ex["a"], p["w"]) + p["b"]) > 0).astype(jnp.float32)

    mk = lambda idx: {"a": jnp.asarray(a[idx], jnp.float32), "y": jnp.asarray(y[idx], jnp.float32)}  # noqa: E731
    params = {"w": jnp.zeros(a.shape[1], jnp.float32), "b": jnp.zeros((), jnp.float32)}
    return Problem(loss_fn, mk(train), params, "breast_cancer_logistic", accuracy_fn, mk(test) if len(test) else None)


# -- (d) sharp and flat basins ------------------------------------------------------------------------


SHARP_CENTER, FLAT_CENTER = -1.0, 1.0


def sharp_flat_basins(
    dim: int = 1,
    n: int = 32,
    sharp_curvature: float = 16.0,
    flat_curvature: float = 1.0,
    noise_scale: float = 0.3,
    seed: int = 0,
    start: Literal["sharp", "flat"] = "sharp",
) -> Problem:
    """A finite-sum loss with a sharp basin at ``x_1 = -1`` and a flat one at ``x_1 = +1``, separated by a barrier
    on the sharp side (about ``-0.6`` for the defaults; :func:`sharp_flat_barrier` locates it):

    ``F(u) = -log( exp(-h_s (u+1)^2 / 2) + sqrt(h_s / h_f) exp(-h_f (u-1)^2 / 2) )`` (the flat basin weighted so
    both minima have comparable depth), ``f_i(x) = F(x_1 - z_i1) + (1/2)(x_2 - z_i2)^2`` in 2-D. Shifts
    ``z_i ~ N(0, noise_scale^2)`` make the gradient noise ``Sigma(x) ~ F''(x)^2 var(z)`` larger in the sharp
    basin, which is what the variance term of m-SAM penalizes. ``start``: ``"sharp"`` or ``"flat"`` minimum.
    """
    if dim not in (1, 2):
        raise ValueError(f"`dim` must be 1 or 2, got {dim!r}")
    check_integer("n", n)
    for name, v in (("sharp_curvature", sharp_curvature), ("flat_curvature", flat_curvature)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
            raise ValueError(f"`{name}` must be a finite number > 0, got {v!r}")
    check_number("noise_scale", noise_scale)
    center = choose("start", start, {"sharp": SHARP_CENTER, "flat": FLAT_CENTER})
    rng = np.random.default_rng(seed)
    z = noise_scale * rng.standard_normal((n, dim))
    z -= z.mean(axis=0)
    hs, hf = float(sharp_curvature), float(flat_curvature)
    log_w = 0.5 * math.log(hs / hf)

    def potential(u):
        return -jnp.logaddexp(-0.5 * hs * jnp.square(u - SHARP_CENTER), log_w - 0.5 * hf * jnp.square(u - FLAT_CENTER))

    def loss_fn(x, ex):
        u = x - ex["shift"]
        out = potential(u[0])
        if dim == 2:
            out = out + 0.5 * jnp.square(u[1])
        return out

    x0 = np.zeros(dim)
    x0[0] = center
    return Problem(loss_fn, {"shift": jnp.asarray(z, jnp.float32)}, jnp.asarray(x0, jnp.float32), f"sharp_flat_{dim}d")


def sharp_flat_barrier(problem: Problem, grid: int = 20001) -> float:
    """The barrier of a :func:`sharp_flat_basins` problem: the interior local maximum of the full loss along
    ``x_1`` in ``[-1.5, 1]`` (other coordinates 0, where the shifts are centred), on a grid of ``grid`` points
    refined by a parabola through the best three. Raises ``ValueError`` when the two basins have merged (no
    interior maximum). The sharp minimum itself sits right of ``-1`` (the flat basin's tail tilts it)."""
    if isinstance(grid, bool) or not isinstance(grid, int) or grid < 3:
        raise ValueError(f"`grid` must be an integer >= 3, got {grid!r}")
    x0 = jnp.asarray(problem.init_params)
    if x0.ndim != 1 or x0.shape[0] not in (1, 2):
        raise ValueError(f"`problem` must come from sharp_flat_basins (a 1-D or 2-D point), got shape {x0.shape}")
    u = np.linspace(SHARP_CENTER - 0.5, FLAT_CENTER, grid)
    pts = np.zeros((grid, x0.shape[0]))
    pts[:, 0] = u
    vals = np.asarray(jax.vmap(problem.full_loss)(jnp.asarray(pts, x0.dtype)), np.float64)
    peaks = np.flatnonzero((vals[1:-1] > vals[:-2]) & (vals[1:-1] >= vals[2:])) + 1
    if peaks.size == 0:
        raise ValueError(f"problem {problem.name!r} has no barrier between its basins (they have merged)")
    i = int(peaks[np.argmax(vals[peaks])])
    y0, y1, y2 = vals[i - 1 : i + 2]
    h = u[1] - u[0]
    den = y0 - 2 * y1 + y2
    shift = 0.5 * h * (y0 - y2) / den if den < 0 else 0.0
    return float(u[i] + shift)


def in_sharp_basin(x, barrier: float = 0.0) -> jax.Array:
    """True while the first coordinate is on the sharp side of ``barrier`` (``x_1 < barrier``). Pass the
    problem's true barrier, :func:`sharp_flat_barrier`: the default ``0`` counts the paths that crossed it but
    have not reached ``x_1 = 0`` as still inside."""
    return jnp.asarray(x).reshape(-1)[0] < barrier


# -- (e) teacher-student ----------------------------------------------------------------------------------


def teacher_student(
    n: int = 256,
    input_dim: int = 8,
    teacher_width: int = 2,
    student_width: int = 4,
    label_noise: float = 0.1,
    seed: int = 0,
) -> Problem:
    """Two-layer tanh networks: ``y_i = v*^T tanh(W* a_i) + noise``, student ``v^T tanh(W a)``, square loss
    ``f_i = (1/2)(v^T tanh(W a_i) - y_i)^2``; ``a_i ~ N(0, I)``; student initialised at small random weights."""
    for name, v in (
        ("n", n),
        ("input_dim", input_dim),
        ("teacher_width", teacher_width),
        ("student_width", student_width),
    ):
        check_integer(name, v)
    check_number("label_noise", label_noise)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, input_dim))
    w_t = rng.standard_normal((teacher_width, input_dim)) / math.sqrt(input_dim)
    v_t = rng.standard_normal(teacher_width)
    y = np.tanh(a @ w_t.T) @ v_t + label_noise * rng.standard_normal(n)
    params = {
        "w1": jnp.asarray(0.5 * rng.standard_normal((student_width, input_dim)) / math.sqrt(input_dim), jnp.float32),
        "w2": jnp.asarray(0.5 * rng.standard_normal(student_width) / math.sqrt(student_width), jnp.float32),
    }

    def loss_fn(p, ex):
        return 0.5 * jnp.square(jnp.dot(p["w2"], jnp.tanh(p["w1"] @ ex["a"])) - ex["y"])

    data = {"a": jnp.asarray(a, jnp.float32), "y": jnp.asarray(y, jnp.float32)}
    return Problem(loss_fn, data, params, f"teacher_student_{teacher_width}to{student_width}")


# -- (f) digits MLP with LayerNorm -----------------------------------------------------------------------


def load_digits_split(test_fraction: float = 0.2, seed: int = 0, label_noise: float = 0.0):
    """scikit-learn's bundled digits (1797 8x8 images, scaled to [0, 1]) as train/test dicts of
    ``image`` (float32, 64) and ``label`` (int32). ``label_noise``: fraction of training labels replaced by
    uniformly random classes (fixed by ``seed``)."""
    from sklearn.datasets import load_digits

    if not 0 <= label_noise <= 1:
        raise ValueError(f"`label_noise` must be a fraction in [0, 1], got {label_noise!r}")
    images, labels = (np.asarray(v) for v in load_digits(return_X_y=True))
    train, test = _split(images.shape[0], test_fraction, seed)
    x = (images / 16.0).astype(np.float32)
    y = labels.astype(np.int32)
    y_train = y[train].copy()
    if label_noise > 0:
        rng = np.random.default_rng(seed + 1)
        flip = rng.random(len(train)) < label_noise
        y_train[flip] = rng.integers(0, 10, int(flip.sum()))
    mk = lambda xx, yy: {"image": jnp.asarray(xx), "label": jnp.asarray(yy)}  # noqa: E731
    return mk(x[train], y_train), (mk(x[test], y[test]) if len(test) else None)


def _dense_init(key, fan_in, fan_out):
    w = jr.normal(key, (fan_in, fan_out), jnp.float32) * math.sqrt(2.0 / fan_in)
    return {"w": w, "b": jnp.zeros(fan_out, jnp.float32)}


def layer_norm(x, p, eps: float = 1e-5):
    """LayerNorm over the last axis with learned ``scale`` and ``bias``."""
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def softmax_cross_entropy(logits, label):
    return jax.nn.logsumexp(logits) - logits[label]


def digits_mlp(
    hidden: int | tuple[int, ...] = 64, seed: int = 0, test_fraction: float = 0.2, label_noise: float = 0.0
) -> Problem:
    """MLP with LayerNorm on scikit-learn's digits: ``dense_i -> layer_norm_i -> relu`` per hidden layer, then a
    ``dense_out`` layer, softmax cross-entropy. Parameters are named by path (``layer_norm_0/scale``...),
    so SAM-ON's default mask selects the LayerNorm scale and bias."""
    widths = _widths(hidden)
    train, test = load_digits_split(test_fraction, seed, label_noise)
    name = "digits_mlp_" + "x".join(map(str, widths)) + (f"_noise{label_noise:g}" if label_noise else "")
    return layer_norm_mlp(train, test, widths, seed, name)


def _widths(hidden) -> tuple[int, ...]:
    widths = (hidden,) if isinstance(hidden, (int, np.integer)) else tuple(hidden)
    if not widths:
        raise ValueError("`hidden` needs at least one layer width")
    for w in widths:
        check_integer("hidden", w)
    return tuple(int(w) for w in widths)


def _channels(channels) -> tuple[int, ...]:
    """``channels`` (convolution widths) as a tuple of positive integers, at least one."""
    channels = tuple(channels)
    if not channels:
        raise ValueError("`channels` needs at least one convolution width")
    for c in channels:
        check_integer("channels", c)
    return channels


def layer_norm_mlp(train: dict, test: dict | None, widths: tuple[int, ...], seed: int, name: str) -> Problem:
    """The MLP of :func:`digits_mlp` on any ``{"image": (n, d), "label": (n,)}`` data with 10 classes."""
    keys = jr.split(jr.key(seed), len(widths) + 1)
    params, fan_in = {}, int(train["image"].shape[1])
    for i, width in enumerate(widths):
        params[f"dense_{i}"] = _dense_init(keys[i], fan_in, width)
        params[f"layer_norm_{i}"] = {"scale": jnp.ones(width, jnp.float32), "bias": jnp.zeros(width, jnp.float32)}
        fan_in = width
    params["dense_out"] = _dense_init(keys[-1], fan_in, 10)
    num_hidden = len(widths)

    def logits_fn(p, image):
        h = image
        for i in range(num_hidden):
            h = h @ p[f"dense_{i}"]["w"] + p[f"dense_{i}"]["b"]
            h = jax.nn.relu(layer_norm(h, p[f"layer_norm_{i}"]))
        return h @ p["dense_out"]["w"] + p["dense_out"]["b"]

    def loss_fn(p, ex):
        return softmax_cross_entropy(logits_fn(p, ex["image"]), ex["label"])

    def accuracy_fn(p, ex):
        return (jnp.argmax(logits_fn(p, ex["image"])).astype(ex["label"].dtype) == ex["label"]).astype(jnp.float32)

    return Problem(
        loss_fn,
        train,
        params,
        name,
        accuracy_fn,
        test,
        micro_batch_gradient=DenseLayerNormMLP(num_hidden, layer_norm, softmax_cross_entropy, loss_fn),
    )
