"""A problem's own exact form of the micro-batch SAM update, for networks whose layers it knows (DESIGN §2).

m-SAM perturbs micro-batch ``j`` (size ``m``, ``k = B / m`` of them) by ``eps_j = c_j g_j`` with
``g_j = grad f_{gamma_j}(x)`` and ``c_j = rho / ||g_j||`` (m-USAM: ``c_j = rho``), and steps along
``G = (1/k) sum_j grad f_{gamma_j}(x + eps_j)``. The generic form evaluates the network at ``k`` copies of the
parameters. For a dense layer ``z = a W + b`` the micro-batch gradient is a sum of ``m`` outer products,
``g_j^W = (1/m) sum_{i in j} a_i^T delta_i`` (``delta_i = d f_i / d z_i``), so at the perturbed point

    a' (W + eps_j^W) = a' W + (c_j / m) sum_{i in j} (a' . a_i) delta_i,
    ||g_j^W||^2 = (1/m^2) sum_{i, i' in j} (a_i . a_i') (delta_i . delta_i'):

``m x m`` Gram matrices in place of ``k`` weight copies; the same flops as SAM's two passes plus ``O(B m w)``.
Biases and LayerNorm parameters are per-micro-batch vectors. The result equals the generic form up to rounding
(tests/test_micro_batch.py); the generic form stays the reference and runs for every other problem.

The same per-example inputs and signals give RW-SAM's exact score ``||g_i||`` and its weighted ascent
``sum_i p_i g_i`` without per-example gradients (:meth:`AbstractMicroBatchGradient.reweighted_gradient`).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree


class AbstractMicroBatchGradient(abc.ABC):
    """What a :class:`~sde_sam.Problem` may carry (``micro_batch_gradient``) to give m-SAM and m-USAM an exact,
    faster step than the generic ``k``-copy form; :meth:`sde_sam.variants.Variant.gradient` uses it for the plain
    micro-batch rule (no mask, no preconditioner, unit or no normalization) and the generic form otherwise."""

    @abc.abstractmethod
    def __call__(
        self,
        params: PyTree,
        batch: PyTree,
        micro_batch_size: int,
        scale: Callable[[Float[Array, " k"]], Float[Array, " k"]],
    ) -> tuple[PyTree, Float[Array, ""], Float[Array, ""]]:
        """``(G, f_gamma(x), mean_j ||g_j||)`` for ``eps_j = c_j g_j`` with ``c = scale(||g_j||^2)``."""

    def reweighted_gradient(
        self,
        params: PyTree,
        batch: PyTree,
        weights_of: Callable[[Float[Array, " B"]], Float[Array, " B"]],
    ) -> tuple[Float[Array, " B"], PyTree, Float[Array, " B"]] | None:
        """RW-SAM's ascent with the exact score (docs/rw-sam.md): ``(f_i(x), sum_i p_i g_i(x), p)`` with
        ``p = weights_of(||g_i(x)||^2)``, without forming per-example gradients; ``None`` (the default): no such
        form, and the generic one (per-example gradients) runs."""
        return None

    def applies(self, loss_fn: Callable, params: PyTree, micro_batch_size: int) -> bool:
        """Whether this form computes the step of a problem with per-example loss ``loss_fn`` and is the cheaper
        one at ``micro_batch_size`` (decided from shapes, at trace time)."""
        return True


def _per_micro(a: Array, k: int) -> Array:
    return a.reshape(k, a.shape[0] // k, *a.shape[1:])


def _gram(a: Array) -> Array:  # [k, m, w] -> [k, m, m]
    return jnp.einsum("kia,kja->kij", a, a)


@dataclasses.dataclass(frozen=True)
class DenseLayerNormMLP(AbstractMicroBatchGradient):
    """The low-rank form for :func:`sde_sam.problems.digits_mlp`'s network: ``num_hidden`` blocks
    ``dense_i -> layer_norm_i -> relu``, then ``dense_out``, softmax cross-entropy on ``batch["label"]``
    (parameters ``dense_i/{w,b}``, ``layer_norm_i/{scale,bias}``, ``dense_out/{w,b}``); ``layer_norm(z, p)`` and
    ``loss(logits, label)`` are the network's own functions; ``loss_fn`` is the problem's per-example loss the form
    was derived from (a problem whose ``loss_fn`` was replaced runs the generic form)."""

    num_hidden: int
    layer_norm: Callable = dataclasses.field(repr=False)
    loss: Callable = dataclasses.field(repr=False)
    loss_fn: Callable = dataclasses.field(repr=False)

    def applies(self, loss_fn, params, micro_batch_size):
        """The Gram terms add ``m (w_in + w_out)`` multiply-adds per example and dense layer to the layer's
        ``w_in w_out``: the form is used while they add at most as much as the layers cost (``m <= 23`` for
        ``digits_mlp(64)``, ``m <= 32`` for ``digits_mlp(256)``); above, the ``k = B / m`` copies are few and
        the generic form is faster (docs/performance.md)."""
        if loss_fn is not self.loss_fn:
            return False
        shapes = [params[n]["w"].shape for n in self._names()[0]]
        return micro_batch_size * sum(a + b for a, b in shapes) <= sum(a * b for a, b in shapes)

    def _names(self) -> tuple[list[str], list[str]]:
        return [f"dense_{i}" for i in range(self.num_hidden)] + ["dense_out"], [
            f"layer_norm_{i}" for i in range(self.num_hidden)
        ]

    def _signals(self, params: PyTree, batch: PyTree) -> tuple[list, list, list, Array]:
        """One pass at ``x``: every dense layer's inputs ``a_i`` and signals ``delta_i = d f_i / d z_i``, the
        per-example LayerNorm gradients, and the per-example losses ``f_i(x)``."""
        images, labels = batch["image"], batch["label"]
        B, L = images.shape[0], self.num_hidden
        dense, norms = self._names()
        example_loss = jax.vmap(self.loss)

        def summed(taps, lns):
            a, inputs = images, []
            for i in range(L):
                inputs.append(a)
                z = a @ params[dense[i]]["w"] + params[dense[i]]["b"] + taps[i]
                a = jax.nn.relu(self.layer_norm(z, lns[i]))
            inputs.append(a)
            ell = example_loss(a @ params["dense_out"]["w"] + params["dense_out"]["b"] + taps[L], labels)
            return jnp.sum(ell), (inputs, ell)

        taps = [jnp.zeros((B, params[n]["b"].shape[0]), params[n]["b"].dtype) for n in dense]
        lns = [jax.tree_util.tree_map(lambda v: jnp.broadcast_to(v, (B, *v.shape)), params[n]) for n in norms]
        (deltas, ln_grads), (inputs, ell) = jax.grad(summed, argnums=(0, 1), has_aux=True)(taps, lns)
        return inputs, deltas, ln_grads, ell

    def reweighted_gradient(self, params, batch, weights_of):
        """``g_i^W = a_i^T delta_i``, so ``||g_i||^2 = sum_layers ||a_i||^2 ||delta_i||^2 + ||delta_i||^2`` plus the
        LayerNorm terms, and ``sum_i p_i g_i^W = A^T diag(p) Delta``: SAM's ascent pass plus ``O(B w)``."""
        inputs, deltas, ln_grads, ell = self._signals(params, batch)
        dense, norms = self._names()
        terms = [jnp.sum(jnp.square(a), 1) * jnp.sum(jnp.square(d), 1) for a, d in zip(inputs, deltas, strict=True)]
        terms += [jnp.sum(jnp.square(d), 1) for d in deltas]
        terms += [jnp.sum(jnp.square(g.reshape(g.shape[0], -1)), 1) for g in jax.tree_util.tree_leaves(ln_grads)]
        p = weights_of(jnp.sum(jnp.stack(terms), axis=0)).astype(ell.dtype)  # ||g_i||^2, [B]
        d = {n: {"w": a.T @ (p[:, None] * s), "b": p @ s} for n, a, s in zip(dense, inputs, deltas, strict=True)}
        weighted = lambda g: jnp.tensordot(p, g, 1)  # noqa: E731  sum_i p_i g_i over the leading axis
        d |= {n: jax.tree_util.tree_map(weighted, t) for n, t in zip(norms, ln_grads, strict=True)}
        return ell, d, p

    def __call__(self, params, batch, micro_batch_size, scale):
        images, labels = batch["image"], batch["label"]
        B, m = images.shape[0], micro_batch_size
        k, L = B // m, self.num_hidden
        dense, norms = self._names()
        example_loss = jax.vmap(self.loss)
        # the ascent at x: the inputs a_i and signals delta_i of every dense layer, per-example LayerNorm grads
        inputs, deltas, ln_grads, ell = self._signals(params, batch)

        A = [_per_micro(a, k) for a in inputs]
        D = [_per_micro(d, k) for d in deltas]
        bias_grads = [d.mean(1) for d in D]
        ln_means = [jax.tree_util.tree_map(lambda g: _per_micro(g, k).mean(1), g) for g in ln_grads]
        terms = [jnp.sum(_gram(a) * _gram(d), axis=(1, 2)) / m**2 for a, d in zip(A, D, strict=True)]
        terms += [jnp.sum(jnp.square(g), axis=1) for g in bias_grads]
        terms += [jnp.sum(jnp.square(g), axis=1) for t in ln_means for g in jax.tree_util.tree_leaves(t)]
        sq = jnp.sum(jnp.stack(terms), axis=0)  # ||g_j||^2, [k]
        c = scale(sq)  # [k]
        per_example = lambda v: jnp.repeat(v, m, axis=0)  # noqa: E731  [k, ...] -> [B, ...]
        c_ex = per_example(c)[:, None] / m
        eps_b = [per_example(c[:, None] * g) for g in bias_grads]
        eps_ln = [jax.tree_util.tree_map(lambda g: per_example(c[:, None] * g), t) for t in ln_means]

        # the descent at x + eps_j, every dense perturbation through (a' . a_i) delta_i within the micro-batch
        def perturbed_dense(i, p, a):
            cross = jnp.einsum("kla,kia->kli", _per_micro(a, k), A[i])
            low_rank = jnp.einsum("kli,kio->klo", cross, D[i]).reshape(B, -1)
            return a @ p[dense[i]]["w"] + p[dense[i]]["b"] + c_ex * low_rank + eps_b[i]

        def perturbed_loss(p):
            a = images
            for i in range(L):
                ln = jax.tree_util.tree_map(lambda v, e: v[None] + e, p[norms[i]], eps_ln[i])
                a = jax.nn.relu(self.layer_norm(perturbed_dense(i, p, a), ln))
            return jnp.mean(example_loss(perturbed_dense(L, p, a), labels))

        return jax.grad(perturbed_loss)(params), jnp.mean(ell), jnp.mean(jnp.sqrt(sq))
