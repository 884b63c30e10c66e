"""The parts of a perturbation ``eps_j = rho T N(T M d_j)`` besides the direction rule (DESIGN §2).

* ``M``: an optional 0/1 mask over parameter leaves (SAM-ON), given to :class:`~sde_sam.variants.Variant` as a
  predicate on parameter paths or a pytree of booleans.
* ``N``: a normalization, a subclass of :class:`AbstractNormalization`: :class:`Identity` (the "U" variants),
  :class:`UnitNorm` (``v/||v||``, SAM) or :class:`FullGradientNorm` (``v/||M g||``, DNSAM).
* ``T``: an optional elementwise preconditioner, a subclass of :class:`AbstractPreconditioner`:
  :class:`ParameterScale` (ASAM, ``T = |x| + c``, so ``eps = rho T^2 d / ||T d||`` with :class:`UnitNorm`).
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from .._problems._problem import Problem, path_name, tree_norm_sq
from .._typing import Real
from ._hyperparameters import WithHyperparameters

#: Floor of the norm in ``N(v) = v / max(||v||, NORM_EPS)``: a zero direction gives ``eps = 0``, never NaN.
NORM_EPS = 1e-12


def inverse_norm_of_sq(sq: Array, eps: float = NORM_EPS) -> Array:
    """``1 / max(sqrt(sq), eps)`` elementwise, from squared norms (``0``-safe, differentiable away from 0)."""
    norm = jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)
    return 1.0 / jnp.maximum(norm, eps)


def safe_normalize(v: PyTree, eps: float = NORM_EPS) -> PyTree:
    """``v / max(||v||, eps)`` over the whole pytree (``||v||`` the Euclidean norm of all leaves)."""
    scale = inverse_norm_of_sq(tree_norm_sq(v), eps)
    return jax.tree_util.tree_map(lambda a: a * scale.astype(a.dtype), v)


def safe_inverse_norm(v: PyTree, eps: float = NORM_EPS) -> Float[Array, ""]:
    """``1 / max(||v||, eps)`` (``0``-safe, differentiable away from ``v = 0``)."""
    return inverse_norm_of_sq(tree_norm_sq(v), eps)


# -- the mask M --------------------------------------------------------------------------------------------


def is_normalization_param(path: str) -> bool:
    """Default SAM-ON predicate: a leaf whose path mentions a normalization layer (``norm``, ``ln``, ``bn``)."""
    parts = [p.lower() for p in path.split("/")]
    if len(parts) > 1 and parts[-1] == "value":  # flax nnx: a Variable's array sits under "value"
        parts = parts[:-1]
    return any("norm" in p or p.startswith(("ln", "bn", "gn")) for p in parts[:-1]) and parts[-1] in (
        "scale",
        "bias",
        "gamma",
        "beta",
        "weight",
    )


def freeze_mask(mask):
    """Turn a user mask (predicate or pytree of bools) into hashable static data."""
    if mask is None or callable(mask):
        return mask
    if isinstance(mask, tuple) and len(mask) == 3 and mask[0] == "pytree":  # already frozen
        return mask
    leaves, treedef = jax.tree_util.tree_flatten(mask)
    for leaf in leaves:
        if np.ndim(leaf) != 0 or np.asarray(leaf).dtype != np.bool_:
            raise TypeError(
                "`mask` must be a predicate on parameter paths or a pytree of Python booleans (one per leaf)"
            )
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


# -- the normalization N -----------------------------------------------------------------------------------


class AbstractNormalization(abc.ABC):
    """``N``: maps the stacked (masked, preconditioned) directions ``v_j`` (leading axis ``k``) to ``N(v_j)``.

    ``linear``: whether ``N(v) = s(x) v`` with a scalar ``s`` that does not depend on ``v`` (then
    :meth:`linear_scale` gives ``s``; the closed-form drift and the first-order diffusion use it).
    """

    linear: ClassVar[bool] = False
    #: ``N(v) = v / ||v||`` (the closed forms of SAM, m-SAM, SAM-ON are gradients of ``rho E||P g_m||``).
    unit: ClassVar[bool] = False
    #: The ``normalize`` field of :class:`sde_sam.symbolic.Spec` (``None``: no sympy derivation).
    symbolic: ClassVar[bool | str | None] = None

    @abc.abstractmethod
    def __call__(self, v: PyTree, problem: Problem, params: PyTree, mask_tree: PyTree | None) -> PyTree:
        """``N(v_j)`` for each ``j`` of the stacked ``v``."""

    def linear_scale(self, problem: Problem, params: PyTree, mask_tree: PyTree | None) -> float | Array:
        """``s(x)`` with ``N(v) = s(x) v`` (only when :attr:`linear`)."""
        raise TypeError(f"{type(self).__name__} is not linear in its argument")

    def norm_sq_scale(self) -> Callable[[Float[Array, " k"]], Float[Array, " k"]] | None:
        """``||v_j||^2 -> s_j`` with ``N(v_j) = s_j v_j`` when ``s_j`` is a function of ``||v_j||^2`` alone (then a
        problem's own micro-batch form can run the step, :class:`sde_sam.problems.AbstractMicroBatchGradient`);
        ``None`` otherwise."""
        return None


@dataclasses.dataclass(frozen=True)
class Identity(AbstractNormalization):
    """``N(v) = v`` (USAM, m-USAM, n-USAM, F-USAM, RW-USAM, USAM-ON)."""

    linear: ClassVar[bool] = True
    symbolic: ClassVar[bool | str | None] = False

    def __call__(self, v, problem, params, mask_tree):
        return v

    def linear_scale(self, problem, params, mask_tree):
        return 1.0

    def norm_sq_scale(self):
        return jnp.ones_like


@dataclasses.dataclass(frozen=True)
class UnitNorm(AbstractNormalization):
    """``N(v) = v / max(||v||, 1e-12)``, per micro-batch (SAM, m-SAM, n-SAM, F-SAM, RW-SAM, SAM-ON, ASAM)."""

    unit: ClassVar[bool] = True
    symbolic: ClassVar[bool | str | None] = True

    def __call__(self, v, problem, params, mask_tree):
        return jax.vmap(safe_normalize)(v)

    def norm_sq_scale(self):  # safe_normalize's scale
        return inverse_norm_of_sq


@dataclasses.dataclass(frozen=True)
class FullGradientNorm(AbstractNormalization):
    """``N(v) = v / max(||M g(x)||, 1e-12)`` with the full-data gradient ``g`` (DNSAM, Compagnoni et al. 2023):
    the batch direction keeps its noise, the radius is set by the deterministic gradient norm."""

    linear: ClassVar[bool] = True
    symbolic: ClassVar[bool | str | None] = "full"

    def __call__(self, v, problem, params, mask_tree):
        s = self.linear_scale(problem, params, mask_tree)
        return jax.tree_util.tree_map(lambda a: a * s.astype(a.dtype), v)

    def linear_scale(self, problem, params, mask_tree):
        return safe_inverse_norm(apply_mask(mask_tree, problem.full_grad(params)))


# -- the preconditioner T ------------------------------------------------------------------------------------


class AbstractPreconditioner(WithHyperparameters, abc.ABC):
    """``T(x)``: an elementwise scale (a pytree like the parameters); the perturbation is ``rho T N(T M d)``.
    Its numbers named in :attr:`hyperparameters` are traced by a compiled run (:class:`WithHyperparameters`)."""

    @abc.abstractmethod
    def __call__(self, params: PyTree) -> PyTree:
        """The scale ``T(x)``, a pytree like ``params``."""


@dataclasses.dataclass(frozen=True)
class ParameterScale(AbstractPreconditioner):
    """ASAM's ``T(x) = |x| + c`` (Kwon et al. 2021; ``c`` their ``eta``, default ``0.01``): with
    :class:`UnitNorm`, ``eps = rho T^2 d / ||T d||``."""

    hyperparameters: ClassVar[tuple[str, ...]] = ("c",)

    c: Real = 0.01

    def __post_init__(self):
        if not (
            isinstance(self.c, (int, float)) and not isinstance(self.c, bool) and math.isfinite(self.c) and self.c > 0
        ):
            raise ValueError(f"`c` must be a finite number in (0, inf), got {self.c!r}")

    def __call__(self, params):
        return jax.tree_util.tree_map(lambda a: jnp.abs(a) + jnp.asarray(self.c, a.dtype), params)


def scale_by(T: PyTree, v: PyTree) -> PyTree:
    """``T v`` for stacked ``v`` (leading axis ``k``) and an elementwise ``T``."""
    return jax.tree_util.tree_map(lambda t, a: a * t[None], T, v)
