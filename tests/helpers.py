"""Shared small problems for the tests (one place, used across the suite)."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.flatten_util import ravel_pytree

import sde_sam as ss
from analysis.stages import x64


class Affine(NamedTuple):
    """A user-defined parameter pytree (not a dict, not an array)."""

    weight: jnp.ndarray
    offset: jnp.ndarray


def user_problem(n: int = 12, d: int = 3, seed: int = 0) -> ss.Problem:
    """A user-defined problem with its own loss and pytree: ``f_i = log cosh(w^T a_i + c - y_i) + w_1^4 / 4``
    (non-quadratic, so Hessians vary with x and with i)."""
    rng = np.random.default_rng(seed)
    data = {
        "a": jnp.asarray(rng.standard_normal((n, d)), jnp.float32),
        "y": jnp.asarray(rng.standard_normal(n), jnp.float32),
    }

    def loss_fn(p: Affine, ex):
        r = jnp.dot(p.weight, ex["a"]) + p.offset - ex["y"]
        return jnp.log(jnp.cosh(r)) + 0.25 * p.weight[0] ** 4

    init = Affine(jnp.asarray(rng.standard_normal(d), jnp.float32), jnp.asarray(0.3, jnp.float32))
    return ss.Problem(loss_fn, data, init, name="user_affine")


def numpy_example_grads(problem: ss.Problem, params, idx) -> np.ndarray:
    """Per-example gradients by central finite differences in float64 numpy (independent of JAX autodiff).

    Returns an array ``(len(idx), d)`` over the flattened parameters."""
    flat, unravel = problem.ravel(params)
    flat = np.asarray(flat, np.float64)
    h = 1e-5
    out = np.zeros((len(idx), flat.size))
    for r, i in enumerate(idx):
        ex = {k: np.asarray(v)[i] for k, v in problem.data.items()}
        for j in range(flat.size):
            e = np.zeros_like(flat)
            e[j] = h
            fp = float(problem.loss_fn(unravel(jnp.asarray(flat + e)), ex))
            fm = float(problem.loss_fn(unravel(jnp.asarray(flat - e)), ex))
            out[r, j] = (fp - fm) / (2 * h)
    return out


def location_problem(centers, x0=None) -> ss.Problem:
    """``f_i(x) = (1/2)||x - z_i||^2`` with given centres ``z_i`` (rows of ``centers``): ``g_i = x - z_i``, so the
    mini-batch noise ``g_gamma - g = zbar - z_gamma`` has exactly the law of (minus) the centred centres."""
    centers = jnp.asarray(centers)
    x0 = jnp.zeros(centers.shape[1], centers.dtype) if x0 is None else jnp.asarray(x0, centers.dtype)
    return ss.Problem(_location_loss, {"z": centers}, x0, name="location")


def _location_loss(x, ex):  # module level: problems that share it share compiled code
    return 0.5 * jnp.sum(jnp.square(x - ex["z"]))


def dense_example_jacobian(problem: ss.Problem, params) -> np.ndarray:
    """The ``(n, d)`` matrix of per-example gradients by one dense ``jax.jacrev`` of the vector of example losses
    over the flattened parameters (a different code path from per-example ``vmap(grad)``)."""
    import jax

    flat, unravel = problem.ravel(params)
    return np.asarray(jax.jacrev(lambda f: problem.example_losses(unravel(f), problem.data))(flat))


def dense_hessian(problem: ss.Problem, params) -> np.ndarray:
    """``H = hess f`` over the flattened parameters by ``jax.hessian`` of the full loss (small d only)."""
    import jax

    flat, unravel = problem.ravel(params)
    h = np.asarray(jax.hessian(lambda f: jnp.mean(problem.example_losses(unravel(f), problem.data)))(flat))
    return 0.5 * (h + h.T)


float64 = x64  # ``jax_enable_x64`` on inside the block, restored afterwards (one implementation, analysis.stages)


# -- an affine regression whose per-example gradients numpy computes in closed form (test_variants, test_rules)
N, D, B = 16, 3, 8


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, D)), rng.standard_normal(N), rng.standard_normal(D), 0.4


def make_problem(seed=0):
    a, y, w, c = _data(seed)

    def loss_fn(p, ex):
        return 0.5 * jnp.square(jnp.dot(ex["a"], p["w"]) + p["c"] - ex["y"]) + 0.25 * p["w"][0] ** 4

    data = {"a": jnp.asarray(a), "y": jnp.asarray(y)}
    return ss.Problem(loss_fn, data, {"c": jnp.asarray(c), "w": jnp.asarray(w)}, "affine")


def np_grads(x, idx, seed=0):
    """Per-example gradients (len(idx), D+1) at flat x = [c, w] (the ravel order of {"c", "w"})."""
    a, y, _, _ = _data(seed)
    c, w = x[0], x[1:]
    r = a[idx] @ w + c - y[idx]
    gw = r[:, None] * a[idx]
    gw[:, 0] += w[0] ** 3
    return np.concatenate([r[:, None], gw], axis=1)


def np_losses(x, idx, seed=0):
    a, y, _, _ = _data(seed)
    c, w = x[0], x[1:]
    return 0.5 * (a[idx] @ w + c - y[idx]) ** 2 + 0.25 * w[0] ** 4


def flat(tree):
    return np.asarray(ravel_pytree(tree)[0])


def jax_G(variant, problem, idx, state=None, key=None):
    params = problem.init_params
    state = variant.init(params) if state is None else state
    key = jr.key(0) if key is None else key
    G, new_state, _ = jax.jit(variant.gradient)(problem, params, state, problem.take(jnp.asarray(idx)), key)
    return flat(G), new_state


def exact_mean_update(pr, variant, sampler, x):
    """``E_xi[G(x; xi)]`` of the discrete step (``Variant.gradient``), by enumerating ordered batches in numpy."""
    n, B = pr.num_examples, sampler.batch_size
    rows = (
        list(itertools.product(range(n), repeat=B))
        if sampler.with_replacement
        else list(itertools.permutations(range(n), B))
    )
    state = ss.sde.sde_state(pr, variant, x)
    fn = jax.jit(jax.vmap(lambda idx: ravel_pytree(variant.gradient(pr, x, state, pr.take(idx), jr.key(0))[0])[0]))
    return np.mean(np.asarray(fn(jnp.asarray(rows))), axis=0)


#: What a call with an argument of the wrong *type* raises: the library's own ``ValueError`` naming the argument, or,
#: when the suite runs with jaxtyping's runtime checks on the package (README's test command), the checker's
#: ``TypeCheckError``, which names the parameter and the expected type before the library's check is reached.
from jaxtyping import TypeCheckError  # noqa: E402

WRONG_TYPE = (ValueError, TypeCheckError)
