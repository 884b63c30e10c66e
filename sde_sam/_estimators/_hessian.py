"""The Hessian-vector product ``H v`` over a data pytree, chunk by chunk (DESIGN §4): one ``jax.jvp`` of the gradient.

Shared by the noise and curvature estimators (neither imports the other for it).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ._estimate import chunked_sum, num_examples


@functools.partial(jax.jit, static_argnames=("chunk_size",))
def hessian_matvec(problem, params, v, data, chunk_size):
    """``H v`` with ``H`` the mean Hessian of ``problem`` over ``data`` (forward-over-reverse, ``chunk_size`` examples
    at a time)."""

    def fn(chunk):
        grad = jax.grad(lambda p: jnp.sum(problem.example_losses(p, chunk)))
        return jax.jvp(grad, (params,), (v,))[1]

    n = num_examples(data)
    return jax.tree_util.tree_map(lambda a: a / n, chunked_sum(fn, data, chunk_size))
