"""SAM variants as one perturbation-rule abstraction (DESIGN §2).

Every variant computes ``G = (1/k) sum_j grad f_{gamma_j}(x + eps_j)`` with ``eps_j = rho * N(M d_j)``:
``d_j`` is the perturbation direction of micro-batch ``j`` (the *rule*), ``M`` an optional 0/1 mask
(SAM-ON), and ``N`` the identity (unnormalized, "U" variants) or ``v -> v / ||v||`` (normalized).
A variant is a small frozen dataclass of static configuration; :meth:`Variant.gradient` is the single
pure step shared by all of them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ._problem import Problem, path_name, tree_norm_sq

#: Floor of the norm in ``N(v) = v / max(||v||, NORM_EPS)``: a zero direction gives ``eps = 0``, never NaN.
NORM_EPS = 1e-12

RULES = ("none", "batch", "full", "friendly", "reweighted")


def safe_normalize(v: PyTree, eps: float = NORM_EPS) -> PyTree:
    """``v / max(||v||, eps)`` over the whole pytree (``||v||`` the Euclidean norm of all leaves)."""
    sq = tree_norm_sq(v)
    safe_sq = jnp.where(sq > 0, sq, 1.0)
    norm = jnp.where(sq > 0, jnp.sqrt(safe_sq), 0.0)
    scale = 1.0 / jnp.maximum(norm, eps)
    return jax.tree_util.tree_map(lambda a: a * scale.astype(a.dtype), v)


def rademacher_like(key: PRNGKeyArray, params: PyTree) -> PyTree:
    """A Rademacher (+-1) pytree shaped like ``params``: one random bit per coordinate, 32 coordinates per
    32-bit word drawn (32x fewer PRNG evaluations than one draw per coordinate)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    sizes = [int(np.size(leaf)) for leaf in leaves]
    total = sum(sizes)
    words = jr.bits(key, (-(-total // 32),), dtype=jnp.uint32)
    bits = (words[:, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
    signs = 2.0 * bits.reshape(-1)[:total] - 1.0
    out, start = [], 0
    for leaf, size in zip(leaves, sizes):
        out.append(signs[start : start + size].reshape(jnp.shape(leaf)).astype(jnp.result_type(leaf)))
        start += size
    return jax.tree_util.tree_unflatten(treedef, out)


def is_normalization_param(path: str) -> bool:
    """Default SAM-ON predicate: a leaf whose path mentions a normalization layer (``norm``, ``ln``, ``bn``)."""
    parts = [p.lower() for p in path.split("/")]
    return any("norm" in p or p.startswith(("ln", "bn", "gn")) for p in parts[:-1]) and parts[-1] in (
        "scale",
        "bias",
        "gamma",
        "beta",
        "weight",
    )


def _freeze_mask(mask):
    """Turn a user mask (predicate or pytree of bools) into hashable static data."""
    if mask is None or callable(mask):
        return mask
    if isinstance(mask, tuple) and len(mask) == 3 and mask[0] == "pytree":  # already frozen
        return mask
    leaves, treedef = jax.tree_util.tree_flatten(mask)
    for leaf in leaves:
        if np.ndim(leaf) != 0 or np.asarray(leaf).dtype != np.bool_:
            raise TypeError("`mask` must be a predicate on parameter paths or a pytree of Python booleans (one per leaf)")
    return ("pytree", treedef, tuple(bool(b) for b in leaves))


def resolve_mask(mask, params: PyTree) -> PyTree | None:
    """The 0/1 mask as a pytree of booleans matching ``params`` (``None``: no mask)."""
    if mask is None:
        return None
    if callable(mask):
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        return jax.tree_util.tree_unflatten(treedef, [bool(mask(path_name(p))) for p, _ in flat])
    _, treedef, leaves = mask
    want = jax.tree_util.tree_structure(params)
    if treedef != want:
        raise ValueError(f"`mask` has pytree structure {treedef}, expected that of the parameters {want}")
    return jax.tree_util.tree_unflatten(treedef, list(leaves))


def apply_mask(mask_tree: PyTree | None, v: PyTree) -> PyTree:
    if mask_tree is None:
        return v
    return jax.tree_util.tree_map(lambda m, a: a if m else jnp.zeros_like(a), mask_tree, v)


class StepOutput(NamedTuple):
    """What one :meth:`Variant.gradient` call returns besides the new state."""

    loss: Float[Array, ""]  # batch loss at x (NaN for rules that never evaluate it)
    direction_norm: Float[Array, ""]  # ||M d|| averaged over micro-batches


def _check_nonneg(name, value, upper=None, upper_open=False):
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and value >= 0 and (upper is None or (value < upper if upper_open else value <= upper))
    if not ok:
        rng = "[0, inf)" if upper is None else f"[0, {upper:g}{')' if upper_open else ']'}"
        raise ValueError(f"`{name}` must be a finite number in {rng}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class Variant:
    """Static configuration of a SAM-type method (DESIGN §2). Build it with the factories below.

    Fields:
        name: display name (``"m-SAM"``...).
        rho: perturbation radius ``rho >= 0``.
        normalize: ``N(v) = v/||v||`` when true, identity when false.
        rule: direction rule, one of ``"none"`` (SGD), ``"batch"`` (``d_j = g_{gamma_j}(x)``), ``"full"``
            (``d = g(x)``), ``"friendly"`` (F-SAM), ``"reweighted"`` (RW-SAM).
        micro_batch_size: ``m``; ``None`` means the whole batch (``k = 1``).
        mask: ``None``, a predicate on parameter paths, or a frozen pytree of booleans (SAM-ON).
        sigma, ema_decay: F-SAM's ``sigma`` and EMA ``lambda``.
        inverse_temperature, fd_delta, score, weights_in_descent: RW-SAM's ``lambda``, ``delta``, score
            (``"finite_difference"`` or ``"exact"``) and which reading of the update (reference/RW-SAM.md).
    """

    name: str
    rho: float = 0.0
    normalize: bool = True
    rule: str = "batch"
    micro_batch_size: int | None = None
    mask: Any = None
    sigma: float = 1.0
    ema_decay: float = 0.9
    inverse_temperature: float = 1.0
    fd_delta: float = 1e-3
    score: str = "finite_difference"
    weights_in_descent: bool = False

    def __post_init__(self):
        _check_nonneg("rho", self.rho)
        if self.rule not in RULES:
            raise ValueError(f"`rule` must be one of {RULES}, got {self.rule!r}")
        if self.micro_batch_size is not None and (
            isinstance(self.micro_batch_size, bool)
            or not isinstance(self.micro_batch_size, (int, np.integer))
            or self.micro_batch_size < 1
        ):
            raise ValueError(f"`micro_batch_size` must be a positive integer or None, got {self.micro_batch_size!r}")
        if self.micro_batch_size is not None and self.rule != "batch":
            raise ValueError(f"`micro_batch_size` applies to the 'batch' rule only, not {self.rule!r}")
        _check_nonneg("sigma", self.sigma, upper=1.0)
        _check_nonneg("ema_decay", self.ema_decay, upper=1.0, upper_open=True)
        _check_nonneg("inverse_temperature", self.inverse_temperature)
        if not (isinstance(self.fd_delta, (int, float)) and math.isfinite(self.fd_delta) and self.fd_delta > 0):
            raise ValueError(f"`fd_delta` must be a finite number in (0, inf), got {self.fd_delta!r}")
        if self.score not in ("finite_difference", "exact"):
            raise ValueError(f"`score` must be 'finite_difference' or 'exact', got {self.score!r}")
        object.__setattr__(self, "mask", _freeze_mask(self.mask))

    # -- static properties -----------------------------------------------------------------------
    @property
    def perturbs(self) -> bool:
        """False when the step is plain SGD: no rule, or ``rho = 0`` (except RW-SAM with weights in the descent,
        whose step ``sum_i p_i g_i`` differs from SGD even at ``rho = 0``)."""
        if self.rule == "none":
            return False
        return self.rho > 0 or (self.rule == "reweighted" and self.weights_in_descent)

    @property
    def descent_is_batch_gradient(self) -> bool:
        """Whether the rho-free update ``G_0`` is the plain batch gradient ``g_gamma`` (so its covariance is
        ``c(B) Sigma``). False for RW-SAM with weights in the descent: ``G_0 = sum_i w_i g_i``."""
        return not (self.rule == "reweighted" and self.weights_in_descent)

    @property
    def differentiable_update(self) -> bool:
        """Whether ``x -> G(x; xi)`` is differentiated correctly by autodiff (needed by the order-2 drift
        ``b + (eta/2)(Db) b``). False for RW-SAM: its weights carry ``stop_gradient``."""
        return self.rule != "reweighted"

    def num_micro_batches(self, batch_size: int) -> int:
        """``k = B / m``; raises when ``m`` does not divide ``B``."""
        m = self.micro_batch_size
        if m is None:
            return 1
        if batch_size % m != 0 or m > batch_size:
            raise ValueError(
                f"`micro_batch_size`={m} must divide the batch size B={batch_size} (valid: divisors of {batch_size})"
            )
        return batch_size // m

    def check(self, batch_size: int, n: int) -> None:
        """Validate against a sampler's batch size ``B`` and the problem's ``n``."""
        self.num_micro_batches(batch_size)

    # -- the step ----------------------------------------------------------------------------------
    def init(self, params: PyTree) -> PyTree:
        """Variant state: F-SAM's EMA ``mu_0 = 0``; an empty tuple for the others."""
        if self.rule == "friendly":
            return jax.tree_util.tree_map(jnp.zeros_like, params)
        return ()

    def directions(
        self, problem: Problem, params: PyTree, state: PyTree, batch: PyTree, key: PRNGKeyArray
    ) -> tuple[PyTree, Array | None, PyTree, Array]:
        """The perturbation directions ``d_j`` (leading axis ``k``), the per-example descent weights
        ``(k, m)`` or ``None`` for plain means, the new state and the batch loss at ``x``."""
        B = jax.tree_util.tree_leaves(batch)[0].shape[0]
        k = self.num_micro_batches(B)
        add_axis = lambda t: jax.tree_util.tree_map(lambda a: a[None], t)  # noqa: E731
        nan = jnp.asarray(jnp.nan, dtype=jax.tree_util.tree_leaves(params)[0].dtype)

        if self.rule == "batch":
            if k == 1:  # no micro-batch axis to vmap over: a plain batch gradient is cheaper on some backends
                loss, g = jax.value_and_grad(problem.batch_loss)(params, batch)
                return add_axis(g), None, state, loss
            micro = jax.tree_util.tree_map(lambda a: a.reshape(k, B // k, *a.shape[1:]), batch)
            losses, grads = jax.vmap(jax.value_and_grad(problem.batch_loss), in_axes=(None, 0))(params, micro)
            return grads, None, state, jnp.mean(losses)
        if self.rule == "full":
            return add_axis(problem.full_grad(params)), None, state, nan
        if self.rule == "friendly":
            loss, g = jax.value_and_grad(problem.batch_loss)(params, batch)
            d = jax.tree_util.tree_map(lambda gi, mu: gi - self.sigma * mu, g, state)
            new_mu = jax.tree_util.tree_map(lambda mu, gi: self.ema_decay * mu + (1 - self.ema_decay) * gi, state, g)
            return add_axis(d), None, new_mu, loss
        if self.rule == "reweighted":
            losses, vjp = jax.vjp(lambda p: problem.example_losses(p, batch), params)
            weights = jax.lax.stop_gradient(self.reweighting(problem, params, batch, losses, key))
            (d,) = vjp(weights.astype(losses.dtype))
            descent = weights[None] if self.weights_in_descent else None
            return add_axis(d), descent, state, jnp.mean(losses)
        raise AssertionError(self.rule)  # "none" never reaches here

    def scores(self, problem: Problem, params: PyTree, batch: PyTree, losses: Array, key: PRNGKeyArray) -> Array:
        """RW-SAM scores ``s_i`` (reference/RW-SAM.md): ``|f_i(x + delta z) - f_i(x)| / delta`` with one
        Rademacher ``z`` shared by the batch, or the exact ``||g_i(x)||``."""
        if self.score == "exact":
            g = problem.per_example_grads(params, batch)
            return jnp.sqrt(sum(jnp.sum(jnp.square(a.reshape(a.shape[0], -1)), axis=1) for a in jax.tree_util.tree_leaves(g)))
        z = rademacher_like(key, params)
        shifted = jax.tree_util.tree_map(lambda a, zz: a + self.fd_delta * zz, params, z)
        return jnp.abs(problem.example_losses(shifted, batch) - losses) / self.fd_delta

    def reweighting(self, problem, params, batch, losses, key) -> Array:
        """Gibbs weights ``p_i = softmax(lambda * s_i)`` over the batch (computed stably)."""
        s = self.scores(problem, params, batch, losses, key)
        return jax.nn.softmax(self.inverse_temperature * s)

    def perturbations(
        self, problem: Problem, params: PyTree, state: PyTree, batch: PyTree, key: PRNGKeyArray
    ) -> tuple[PyTree, Array | None, PyTree, StepOutput]:
        """The perturbations ``eps_j = rho N(M d_j)`` (leading axis ``k``), descent weights or ``None``, the new
        state and a :class:`StepOutput` (DESIGN §2)."""
        d, descent_weights, new_state, loss = self.directions(problem, params, state, batch, key)
        mask_tree = resolve_mask(self.mask, params)
        d = jax.vmap(lambda dj: apply_mask(mask_tree, dj))(d)
        norms = jax.vmap(lambda dj: jnp.sqrt(tree_norm_sq(dj)))(d)
        if self.normalize:
            d = jax.vmap(safe_normalize)(d)
        eps = jax.tree_util.tree_map(lambda a: self.rho * a, d)
        return eps, descent_weights, new_state, StepOutput(loss, jnp.mean(norms))

    def gradient(
        self, problem: Problem, params: PyTree, state: PyTree, batch: PyTree, key: PRNGKeyArray
    ) -> tuple[PyTree, PyTree, StepOutput]:
        """One update direction ``G = (1/k) sum_j grad f_{gamma_j}(x + rho N(M d_j))`` (DESIGN §2).

        Returns ``(G, new_state, StepOutput)``. ``x_{k+1} = x_k - eta * G`` is the plain step; ``G`` can
        also feed any optax chain (see :func:`sde_sam.with_optax`).
        """
        if not self.perturbs:
            loss, g = jax.value_and_grad(problem.batch_loss)(params, batch)
            zero = jnp.zeros((), dtype=loss.dtype)
            new_state = state
            if self.rule == "friendly":  # keep the EMA running even at rho = 0
                _, _, new_state, _ = self.directions(problem, params, state, batch, key)
            return g, new_state, StepOutput(loss, zero)

        eps, descent_weights, new_state, out = self.perturbations(problem, params, state, batch, key)
        k = jax.tree_util.tree_leaves(eps)[0].shape[0]
        B = jax.tree_util.tree_leaves(batch)[0].shape[0]
        if self.rule == "batch":
            micro = jax.tree_util.tree_map(lambda a: a.reshape(k, B // k, *a.shape[1:]), batch)
        else:
            micro = jax.tree_util.tree_map(lambda a: a[None], batch)

        weights = None if descent_weights is None else descent_weights.astype(out.loss.dtype)

        def perturbed_loss(p):
            # (1/k) sum_j f_{gamma_j}(p + eps_j): one gradient w.r.t. the shared p sums the k micro-batch
            # gradients inside the backward pass instead of materialising k gradients and averaging them.
            def loss_j(eps_j, batch_j, w_j):
                ell = problem.example_losses(jax.tree_util.tree_map(jnp.add, p, eps_j), batch_j)
                return jnp.mean(ell) if w_j is None else jnp.sum(w_j * ell)

            if k == 1:  # a single perturbation: no vmap over a size-1 axis
                take0 = lambda t: jax.tree_util.tree_map(lambda a: a[0], t)  # noqa: E731
                return loss_j(take0(eps), take0(micro), None if weights is None else weights[0])
            if weights is None:
                return jnp.mean(jax.vmap(lambda e, b: loss_j(e, b, None))(eps, micro))
            return jnp.mean(jax.vmap(loss_j)(eps, micro, weights))

        G = jax.grad(perturbed_loss)(params)
        return G, new_state, out

    def replace(self, **changes) -> Variant:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


# -- factories ----------------------------------------------------------------------------------------


def sgd() -> Variant:
    """SGD: ``G = g_gamma(x)``."""
    return Variant("SGD", rho=0.0, rule="none")


def usam(rho: float) -> Variant:
    """USAM (Andriushchenko & Flammarion 2022): ``G = g_gamma(x + rho g_gamma(x))``."""
    return Variant("USAM", rho=rho, normalize=False)


def sam(rho: float) -> Variant:
    """SAM (Foret et al. 2021): ``G = g_gamma(x + rho g_gamma/||g_gamma||)``."""
    return Variant("SAM", rho=rho, normalize=True)


def n_usam(rho: float) -> Variant:
    """n-USAM: full-data ascent direction, ``G = g_gamma(x + rho g(x))``."""
    return Variant("n-USAM", rho=rho, normalize=False, rule="full")


def n_sam(rho: float) -> Variant:
    """n-SAM: ``G = g_gamma(x + rho g(x)/||g(x)||)`` (Andriushchenko & Flammarion 2022)."""
    return Variant("n-SAM", rho=rho, normalize=True, rule="full")


def m_usam(rho: float, micro_batch_size: int) -> Variant:
    """m-USAM: ``G = (1/k) sum_j g_{gamma_j}(x + rho g_{gamma_j}(x))``, micro-batches of size ``m``."""
    return Variant("m-USAM", rho=rho, normalize=False, micro_batch_size=micro_batch_size)


def m_sam(rho: float, micro_batch_size: int) -> Variant:
    """m-SAM (Foret et al. 2021, m-sharpness): one normalized ascent per micro-batch, all at once (vmap)."""
    return Variant("m-SAM", rho=rho, normalize=True, micro_batch_size=micro_batch_size)


def f_sam(rho: float, sigma: float = 1.0, ema_decay: float = 0.9) -> Variant:
    """F-SAM (Li et al. 2024): ``d = g_gamma - sigma mu_{k-1}``, ``mu_k = lambda mu_{k-1} + (1-lambda) g_gamma``,
    ``mu_0 = 0`` (so the first step uses ``g_gamma``); ``ema_decay`` is the paper's ``lambda``."""
    return Variant("F-SAM", rho=rho, normalize=True, rule="friendly", sigma=sigma, ema_decay=ema_decay)


def f_usam(rho: float, sigma: float = 1.0, ema_decay: float = 0.9) -> Variant:
    """F-USAM: F-SAM without the normalization."""
    return Variant("F-USAM", rho=rho, normalize=False, rule="friendly", sigma=sigma, ema_decay=ema_decay)


def sam_on(rho: float, mask: Callable[[str], bool] | PyTree | None = None, normalize: bool = True) -> Variant:
    """SAM-ON (Mueller et al. 2023): perturb only the masked coordinates; norm over them alone.

    ``mask``: a predicate on parameter paths (``"layer_norm_0/scale"``) or a pytree of booleans; default
    :func:`is_normalization_param` (normalization-layer scale and bias).
    """
    return Variant(
        "SAM-ON" if normalize else "USAM-ON",
        rho=rho,
        normalize=normalize,
        mask=is_normalization_param if mask is None else mask,
    )


def rw_sam(
    rho: float,
    inverse_temperature: float = 1.0,
    fd_delta: float = 1e-3,
    score: str = "finite_difference",
    weights_in_descent: bool = False,
) -> Variant:
    """RW-SAM (Luo et al. 2025; reference/RW-SAM.md): ascent along ``sum_i p_i g_i``, ``p = softmax(lambda s)``."""
    return Variant(
        "RW-SAM",
        rho=rho,
        normalize=True,
        rule="reweighted",
        inverse_temperature=inverse_temperature,
        fd_delta=fd_delta,
        score=score,
        weights_in_descent=weights_in_descent,
    )


def rw_usam(
    rho: float,
    inverse_temperature: float = 1.0,
    fd_delta: float = 1e-3,
    score: str = "finite_difference",
    weights_in_descent: bool = False,
) -> Variant:
    """RW-USAM: RW-SAM without the normalization."""
    return dataclasses.replace(
        rw_sam(rho, inverse_temperature, fd_delta, score, weights_in_descent), name="RW-USAM", normalize=False
    )


_FACTORIES: dict[str, Callable[..., Variant]] = {
    "sgd": sgd,
    "usam": usam,
    "sam": sam,
    "n-usam": n_usam,
    "n-sam": n_sam,
    "m-usam": m_usam,
    "m-sam": m_sam,
    "f-sam": f_sam,
    "f-usam": f_usam,
    "sam-on": sam_on,
    "rw-sam": rw_sam,
    "rw-usam": rw_usam,
}

NAMES = tuple(_FACTORIES)


def get(name: str, **kwargs) -> Variant:
    """A variant by name (case-insensitive, ``_`` or ``-``): ``get("m-sam", rho=0.05, micro_batch_size=4)``."""
    key = str(name).lower().replace("_", "-")
    if key not in _FACTORIES:
        raise ValueError(f"unknown variant {name!r}; valid names: {', '.join(NAMES)}")
    return _FACTORIES[key](**kwargs)
