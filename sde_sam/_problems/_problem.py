"""Finite-sum problems ``f(x) = (1/n) sum_i f_i(x)`` (DESIGN §1)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int, PyTree

from .._checks import check_chunk_size
from .._pytree import fields_pytree
from ._micro_batch import AbstractMicroBatchGradient

Params = PyTree
Example = PyTree
LossFn = Callable[[Params, Example], Float[Array, ""]]


def resolve_dtype(dtype) -> Any:
    """``float32`` or ``float64``; ``float64`` only when ``jax_enable_x64`` is on (else a clear error)."""
    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype("float32"), jnp.dtype("float64")):
        raise ValueError(f"`dtype` must be float32 or float64, got {dtype}")
    if dtype == jnp.dtype("float64") and not jax.config.read("jax_enable_x64"):
        raise ValueError("`dtype`=float64 needs `jax.config.update('jax_enable_x64', True)` before any JAX work")
    return dtype


def _leading_size(data: PyTree, argname: str) -> int:
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError(f"`{argname}` is empty: it must hold at least one array with a leading example axis")
    sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) > 0 else -1 for leaf in leaves}
    if -1 in sizes:
        raise ValueError(f"every leaf of `{argname}` needs a leading example axis; found a scalar leaf")
    if len(sizes) != 1:
        raise ValueError(f"leaves of `{argname}` disagree on the number of examples: sizes {sorted(sizes)}")
    (n,) = sizes
    if n == 0:
        raise ValueError(f"`{argname}` is empty: it has 0 examples (need n >= 1)")
    return n


#: Examples on which a new problem's loss and accuracy are evaluated at ``init_params``.
CHECKED_EXAMPLES = 64


def _check_like_data(test_data: PyTree, data: PyTree) -> None:
    """``test_data`` has the structure of ``data`` and the same shape per example (else a ``ValueError``)."""
    want, got = jax.tree_util.tree_structure(data), jax.tree_util.tree_structure(test_data)
    if want != got:
        raise ValueError(f"`test_data` has pytree structure {got}, expected {want} (that of `data`)")
    flat = jax.tree_util.tree_flatten_with_path(data)[0]
    for (path, a), b in zip(flat, jax.tree_util.tree_leaves(test_data), strict=True):
        if np.shape(a)[1:] != np.shape(b)[1:]:
            raise ValueError(
                f"`test_data` leaf {jax.tree_util.keystr(path) or '<root>'} has examples of shape {np.shape(b)[1:]}, "
                f"expected {np.shape(a)[1:]} (those of `data`)"
            )


def check_finite(tree: PyTree, argname: str) -> None:
    """Raise ``ValueError`` naming ``argname`` when a floating leaf holds NaN or inf."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree)):
        return
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(
                f"`{argname}` contains {bad} non-finite value(s) (NaN or inf) at leaf "
                f"{jax.tree_util.keystr(path) or '<root>'}; all values must be finite"
            )


def path_name(path: tuple) -> str:
    """A parameter path as ``"layer_norm_0/scale"`` (keys joined by '/')."""
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:  # pragma: no cover - exotic key types
            parts.append(str(entry))
    return "/".join(parts)


#: A problem's pytree: its arrays are the leaves, the functions and the name static.
PROBLEM_LEAVES = ("data", "init_params", "test_data")
PROBLEM_STATIC = ("loss_fn", "name", "accuracy_fn", "micro_batch_gradient")


@fields_pytree(leaves=PROBLEM_LEAVES, static=PROBLEM_STATIC)
@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """A finite-sum loss ``f(x) = (1/n) sum_i f_i(x)`` with ``f_i(x) = loss_fn(x, data[i])`` (DESIGN §1).

    Arguments:
        loss_fn: per-example loss ``loss_fn(params, example) -> scalar``; ``example`` is one slice of
            ``data`` along its leading axis. Any parameter pytree works.
        data: a pytree of arrays sharing a leading axis of size ``n`` (the examples).
        init_params: the initial point, a pytree of floating arrays.
        name: a label used in records and reports.
        accuracy_fn: optional ``accuracy_fn(params, example) -> 0/1`` for classification problems.
        test_data: optional held-out examples (same structure as ``data``).
        micro_batch_gradient: optional exact, faster form of the m-SAM/m-USAM step for a network whose layers
            the problem knows (:class:`sde_sam.problems.AbstractMicroBatchGradient`; ``digits_mlp`` sets one);
            ``None``: the generic form. ``dataclasses.replace(problem, micro_batch_gradient=None)`` turns it off.

    The problem is a pytree (``data``, ``init_params``, ``test_data`` are its leaves), so it can be
    passed through ``jax.jit`` without being baked into the compiled program as constants.
    """

    loss_fn: LossFn
    data: PyTree
    init_params: Params
    name: str = "custom"
    accuracy_fn: Callable[[Params, Example], Array] | None = None
    test_data: PyTree | None = None
    micro_batch_gradient: AbstractMicroBatchGradient | None = None
    _validate: dataclasses.InitVar[bool] = True  # False: arrays already checked (a cast, a rebuilt node)

    def __post_init__(self, _validate: bool):
        if not _validate:
            return
        if self.micro_batch_gradient is not None and not isinstance(
            self.micro_batch_gradient, AbstractMicroBatchGradient
        ):
            raise TypeError(
                "`micro_batch_gradient` must be a sde_sam.problems.AbstractMicroBatchGradient or None, "
                f"got {type(self.micro_batch_gradient).__name__}"
            )
        if not callable(self.loss_fn):
            raise TypeError(f"`loss_fn` must be callable loss_fn(params, example) -> scalar, got {type(self.loss_fn)}")
        _leading_size(self.data, "data")
        check_finite(self.data, "data")
        if not jax.tree_util.tree_leaves(self.init_params):
            raise ValueError("`init_params` is empty: it must hold at least one floating array")
        for path, leaf in jax.tree_util.tree_flatten_with_path(self.init_params)[0]:
            if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, float)):
                raise TypeError(
                    f"`init_params` leaves must be floating arrays, got a {type(leaf).__name__} at "
                    f"{path_name(path) or '(root)'}; a model object from a library goes through its adapter: "
                    "ss.problems.from_equinox(loss, data, module) or "
                    "ss.problems.from_flax(loss, data, model[, variables])"
                )
            if not jnp.issubdtype(jnp.result_type(leaf), jnp.inexact):
                raise TypeError(f"`init_params` leaves must be floating arrays, got dtype {jnp.result_type(leaf)}")
        check_finite(self.init_params, "init_params")
        if self.test_data is not None:
            _leading_size(self.test_data, "test_data")
            check_finite(self.test_data, "test_data")
            _check_like_data(self.test_data, self.data)
        example = jax.tree_util.tree_map(lambda a: a[0], self.data)
        try:
            out = jax.eval_shape(self.loss_fn, self.init_params, example)
        except Exception as err:
            raise TypeError(
                f"`loss_fn(init_params, example)` failed on the first example: {err}. Check that "
                "`init_params` matches the structure `loss_fn` expects."
            ) from err
        if not isinstance(out, jax.ShapeDtypeStruct):
            raise TypeError(
                f"`loss_fn` must return one scalar array per example, got a {type(out).__name__} "
                "(return the loss alone; e.g. `lambda p, ex: loss_and_aux(p, ex)[0]`)"
            )
        if out.shape != () or not jnp.issubdtype(out.dtype, jnp.floating):
            raise TypeError(
                f"`loss_fn` must return a scalar per example (a floating array of shape ()), got shape {out.shape} "
                f"{out.dtype}"
            )
        self._check_values_at_start()

    def _check_values_at_start(self) -> None:
        """The loss is finite and ``accuracy_fn`` a number in [0, 1] at ``init_params`` on the first
        :data:`CHECKED_EXAMPLES` examples: a clear error at construction rather than runs that all diverge at step 0
        or accuracies outside [0, 1] recorded silently."""
        if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves((self.data, self.init_params))):
            return
        wide = [a for a in jax.tree_util.tree_leaves(self.init_params) if getattr(a, "dtype", None) == np.float64]
        if wide and not jax.config.read("jax_enable_x64"):
            warnings.warn(
                "`init_params` holds float64 arrays but jax_enable_x64 is off: JAX runs them in float32 (the "
                "problem prints float32). Enable x64 before any JAX work to run in float64.",
                stacklevel=3,
            )
        m = min(self.num_examples, CHECKED_EXAMPLES)
        head = jax.tree_util.tree_map(lambda a: jnp.asarray(a[:m]), self.data)  # the dtypes JAX runs
        losses = np.asarray(self.example_losses(self.init_params, head))
        if not np.all(np.isfinite(losses)):
            i = int(np.flatnonzero(~np.isfinite(losses))[0])
            raise ValueError(
                f"`loss_fn` is not finite at `init_params`: example {i} gives {losses[i]} (every run would diverge "
                "at step 0); check the loss and the initial parameters"
            )
        if self.accuracy_fn is None:
            return
        example = jax.tree_util.tree_map(lambda a: a[0], head)
        try:
            shape = jax.eval_shape(self.accuracy_fn, self.init_params, example)
        except Exception as err:
            raise TypeError(f"`accuracy_fn(init_params, example)` failed on the first example: {err}") from err
        if not isinstance(shape, jax.ShapeDtypeStruct) or shape.shape != ():
            got = shape.shape if isinstance(shape, jax.ShapeDtypeStruct) else type(shape).__name__
            raise TypeError(f"`accuracy_fn` must return one number per example (shape ()), got {got}")
        acc = np.asarray(jax.vmap(self.accuracy_fn, in_axes=(None, 0))(self.init_params, head), np.float64)
        outside = ~(np.isfinite(acc) & (acc >= 0) & (acc <= 1))
        if np.any(outside):
            i = int(np.flatnonzero(outside)[0])
            raise ValueError(
                f"`accuracy_fn` must give a number in [0, 1] per example (1 = correct), got {acc[i]} for example {i}"
            )

    def __repr__(self) -> str:
        """Short: name, sizes and dtype, never the dataset."""
        leaves = jax.tree_util.tree_leaves(self.init_params)
        dtype = jax.dtypes.canonicalize_dtype(leaves[0].dtype) if leaves else "none"  # the dtype JAX runs
        test = "" if self.test_data is None else f", test={_leading_size(self.test_data, 'test_data')}"
        return f"Problem({self.name!r}, n={self.num_examples}, d={self.dim}, {len(leaves)} leaves, {dtype}{test})"

    # -- sizes -----------------------------------------------------------------------------------
    @property
    def num_examples(self) -> int:
        """``n``, the number of terms of the finite sum."""
        return int(jax.tree_util.tree_leaves(self.data)[0].shape[0])

    @property
    def dim(self) -> int:
        """``d``, the number of scalar parameters."""
        return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(self.init_params)))

    def ravel(self, params: Params | None = None):
        """``(flat, unravel)`` for ``params`` (default: ``init_params``)."""
        return ravel_pytree(self.init_params if params is None else params)

    def with_dtype(self, dtype) -> Problem:
        """The same problem with floating data and parameters cast to ``dtype`` (float32 or float64; float64
        needs ``jax.config.update("jax_enable_x64", True)``, else a ``ValueError`` rather than a silent float32)."""
        dtype = resolve_dtype(dtype)

        def cast(a):
            a = jnp.asarray(a)
            return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

        tm = jax.tree_util.tree_map
        return dataclasses.replace(
            self,
            data=tm(cast, self.data),
            init_params=tm(cast, self.init_params),
            test_data=None if self.test_data is None else tm(cast, self.test_data),
            _validate=False,
        )

    def check_params(self, params: Params, argname: str = "params") -> None:
        """Raise when ``params`` does not have the structure and shapes of ``init_params``."""
        want = jax.tree_util.tree_structure(self.init_params)
        got = jax.tree_util.tree_structure(params)
        if want != got:
            raise ValueError(f"`{argname}` has pytree structure {got}, expected {want} (that of init_params)")
        for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(self.init_params), strict=True):
            if np.shape(a) != np.shape(b):
                raise ValueError(f"`{argname}` has a leaf of shape {np.shape(a)}, expected {np.shape(b)}")

    # -- data access -----------------------------------------------------------------------------
    def take(self, indices: Int[Array, " b"]) -> PyTree:
        """The examples at ``indices`` (a batch pytree with leading axis ``b``)."""
        return jax.tree_util.tree_map(lambda a: jnp.take(a, indices, axis=0), self.data)

    # -- losses and gradients --------------------------------------------------------------------
    def example_losses(self, params: Params, batch: PyTree) -> Float[Array, " b"]:
        """``(f_i(x))_{i in batch}``."""
        return jax.vmap(self.loss_fn, in_axes=(None, 0))(params, batch)

    def batch_loss(self, params: Params, batch: PyTree) -> Float[Array, ""]:
        """``f_gamma(x) = (1/|gamma|) sum_{i in gamma} f_i(x)``."""
        return jnp.mean(self.example_losses(params, batch))

    def batch_grad(self, params: Params, batch: PyTree) -> Params:
        """``g_gamma(x) = grad f_gamma(x)``."""
        return jax.grad(self.batch_loss)(params, batch)

    def full_loss(self, params: Params, chunk_size: int | None = None) -> Float[Array, ""]:
        """``f(x)`` over all ``n`` examples (in chunks of ``chunk_size`` examples when given)."""
        return _chunked_mean(lambda b: self.example_losses(params, b), self.data, chunk_size)

    def full_grad(self, params: Params, chunk_size: int | None = None) -> Params:
        """``g(x) = grad f(x)``."""
        return jax.grad(self.full_loss)(params, chunk_size)

    def test_loss(self, params: Params) -> Float[Array, ""]:
        if self.test_data is None:
            raise ValueError(f"problem {self.name!r} has no test_data")
        return jnp.mean(self.example_losses(params, self.test_data))

    def accuracy(self, params: Params, data: PyTree | None = None) -> Float[Array, ""]:
        """Mean of ``accuracy_fn`` over ``data`` (default: the training data)."""
        if self.accuracy_fn is None:
            raise ValueError(f"problem {self.name!r} has no accuracy_fn (not a classification problem)")
        data = self.data if data is None else data
        return jnp.mean(jax.vmap(self.accuracy_fn, in_axes=(None, 0))(params, data).astype(jnp.result_type(float)))

    def per_example_grads(self, params: Params, batch: PyTree | None = None, chunk_size: int | None = None) -> Params:
        """``(g_i(x))_i`` stacked on a leading axis, computed ``chunk_size`` examples at a time.

        Memory is bounded by ``chunk_size * d`` for the working set (plus the output ``b * d``).
        """
        batch = self.data if batch is None else batch
        grad_one = jax.grad(self.loss_fn)
        fn = jax.vmap(grad_one, in_axes=(None, 0))
        return _chunked_map(lambda b: fn(params, b), batch, chunk_size)


def _chunked_map(fn: Callable[[PyTree], PyTree], data: PyTree, chunk_size: int | None) -> PyTree:
    """``fn`` applied to ``data`` in chunks along the leading axis; outputs concatenated."""
    check_chunk_size(chunk_size)
    n = jax.tree_util.tree_leaves(data)[0].shape[0]
    if chunk_size is None or chunk_size >= n:
        return fn(data)
    num_full, rest = divmod(n, chunk_size)
    head = jax.tree_util.tree_map(
        lambda a: a[: num_full * chunk_size].reshape(num_full, chunk_size, *a.shape[1:]), data
    )
    out = jax.lax.map(fn, head)
    out = jax.tree_util.tree_map(lambda a: a.reshape(num_full * chunk_size, *a.shape[2:]), out)
    if rest:
        tail = fn(jax.tree_util.tree_map(lambda a: a[num_full * chunk_size :], data))
        out = jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), out, tail)
    return out


def _chunked_mean(fn: Callable[[PyTree], Array], data: PyTree, chunk_size: int | None) -> Array:
    """Mean over all examples of ``fn(chunk) -> per-example values``, chunk by chunk."""
    check_chunk_size(chunk_size)
    n = jax.tree_util.tree_leaves(data)[0].shape[0]
    if chunk_size is None or chunk_size >= n:
        return jnp.mean(fn(data))
    num_full, rest = divmod(n, chunk_size)
    head = jax.tree_util.tree_map(
        lambda a: a[: num_full * chunk_size].reshape(num_full, chunk_size, *a.shape[1:]), data
    )
    total = jnp.sum(jax.lax.map(lambda b: jnp.sum(fn(b)), head))
    if rest:
        total = total + jnp.sum(fn(jax.tree_util.tree_map(lambda a: a[num_full * chunk_size :], data)))
    return total / n


def tree_dot(a: PyTree, b: PyTree) -> Array:
    """``<a, b>`` summed over all leaves."""
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return jnp.asarray(sum(jnp.vdot(x, y) for x, y in pairs))


def tree_norm_sq(a: PyTree) -> Array:
    """``||a||^2`` over all leaves."""
    return jnp.asarray(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(a)))


def tree_axpy(alpha: Any, x: PyTree, y: PyTree) -> PyTree:
    """``alpha * x + y`` leafwise."""
    return jax.tree_util.tree_map(lambda u, v: alpha * u + v, x, y)
