"""Small shared pieces of the noise and curvature estimators (DESIGN §4): result containers, argument
checks, chunked reductions over examples and flat views of parameter pytrees."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree

from .._checks import check_chunk_size as check_chunk_size
from .._checks import check_integer
from .._problems._problem import Problem


def checks_params(fn: Callable) -> Callable:
    """Decorate a public estimator ``fn(problem, params, ...)``: ``problem`` must be a :class:`~sde_sam.Problem`
    and ``params`` (and a direction ``v``, where the estimator takes one) must have the structure and shapes of
    ``problem.init_params``; otherwise a ``TypeError``/``ValueError`` names the argument (never an XLA error)."""

    takes_v = list(inspect.signature(fn).parameters)[2:3] == ["v"]

    @functools.wraps(fn)
    def checked(problem, params, *args, **kwargs):
        if not isinstance(problem, Problem):
            raise TypeError(f"`problem` must be a sde_sam.Problem, got {type(problem).__name__}")
        problem.check_params(params, "params")
        v = kwargs.get("v", args[0] if takes_v and args else None)
        if v is not None:
            problem.check_params(v, "v")
        return fn(problem, params, *args, **kwargs)

    return checked


class Estimate(NamedTuple):
    """A Monte Carlo (or otherwise approximate) estimate with its standard error.

    ``value`` and ``stderr`` have the same structure (a scalar, an array or a parameter pytree).
    Exact quantities are returned as plain arrays, not as an ``Estimate``.
    """

    value: Any
    stderr: Any


class Eigs(NamedTuple):
    """Eigenpairs in decreasing order: ``values`` ``(k,)`` and ``vectors`` ``(k, d)`` (rows, unit norm, over the
    flattened parameters in ``jax.flatten_util.ravel_pytree`` order)."""

    values: Float[Array, " k"]
    vectors: Float[Array, "k d"]


def check_k(k: Any, d: int) -> int:
    """``k`` eigenpairs of a ``d x d`` operator: ``1 <= k <= d``."""
    return check_integer("k", k, 1, d, range_text=f"an integer in [1, d={d}]", note=" (number of eigenpairs)")


def check_sampler(sampler: Any, n: int) -> None:
    from .._problems._sampler import check_is_sampler

    check_is_sampler(sampler)
    sampler.check(n)


def num_examples(data: PyTree) -> int:
    return int(jax.tree_util.tree_leaves(data)[0].shape[0])


def chunked_sum(fn: Callable[[PyTree], PyTree], data: PyTree, chunk_size: int | None) -> PyTree:
    """``sum_chunks fn(chunk)`` over ``data`` cut along its leading axis into chunks of ``chunk_size``.

    A ``lax.scan`` accumulates the sum, so the working set is one chunk's (never ``n``'s)."""
    check_chunk_size(chunk_size)
    n = num_examples(data)
    if chunk_size is None or chunk_size >= n:
        return fn(data)
    num_full, rest = divmod(n, chunk_size)
    head = jax.tree_util.tree_map(
        lambda a: a[: num_full * chunk_size].reshape(num_full, chunk_size, *a.shape[1:]), data
    )
    first = jax.tree_util.tree_map(lambda a: a[0], head)
    init = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, first))

    def body(acc, chunk):
        return jax.tree_util.tree_map(jnp.add, acc, fn(chunk)), None

    total, _ = jax.lax.scan(body, init, head)
    if rest:
        tail = fn(jax.tree_util.tree_map(lambda a: a[num_full * chunk_size :], data))
        total = jax.tree_util.tree_map(jnp.add, total, tail)
    return total


def flat_rows(tree: PyTree) -> Array:
    """Stacked pytrees (leading axis ``b``) as a ``(b, d)`` matrix in ``ravel_pytree`` order."""
    leaves = jax.tree_util.tree_leaves(tree)
    b = leaves[0].shape[0]
    dtype = jnp.result_type(*leaves)
    return jnp.concatenate([jnp.reshape(a, (b, -1)).astype(dtype) for a in leaves], axis=1)


def flat_matvec(matvec: Callable[[PyTree], PyTree], params: PyTree) -> tuple[Callable[[Array], Array], Array]:
    """A pytree operator ``v -> A v`` as a function on flat vectors, and the flat ``params``."""
    flat, unravel = ravel_pytree(params)

    def mv(v):
        return ravel_pytree(matvec(unravel(v)))[0]

    return mv, flat


def jackknife(stat: Callable[[Array], Array], columns: Array) -> tuple[Array, Array]:
    """Delete-one jackknife for a statistic of column means: ``columns`` ``(P, q)`` holds ``q`` per-sample
    quantities for ``P`` samples; ``stat(means (q,)) -> scalar``. Returns ``(stat(all means), stderr)``."""
    p = columns.shape[0]
    total = jnp.sum(columns, axis=0)
    value = stat(total / p)
    loo = (total[None, :] - columns) / (p - 1)
    thetas = jax.vmap(stat)(loo)
    stderr = jnp.sqrt((p - 1) / p * jnp.sum(jnp.square(thetas - jnp.mean(thetas))))
    return value, stderr


def mean_and_stderr(samples: Array, axis: int = 0) -> Estimate:
    """Sample mean and its standard error ``std(ddof=1)/sqrt(N)`` along ``axis``."""
    num = samples.shape[axis]
    return Estimate(jnp.mean(samples, axis=axis), jnp.std(samples, axis=axis, ddof=1) / jnp.sqrt(num))


__all__ = ["Eigs", "Estimate", "Problem"]
