"""Perturbation rules: the direction ``d_j`` of a SAM-type step (DESIGN §2).

A rule is a small frozen dataclass deriving from :class:`AbstractRule`. The discrete step, the SDE drifts
(first order in ``rho`` and exact in ``rho``), the empirical diffusion, SVAG and the weak-order study need
only :meth:`AbstractRule.directions` and the rule's static facts. A rule only steps: a closed-form drift, a
first-order diffusion and a sympy derivation live in their own layers, dispatched on the rule's type
(:func:`sde_sam.sde.closed_form_of`, :func:`sde_sam.sde.first_order_noise_of`,
:func:`sde_sam.symbolic.symbolic_spec_of`). Built in:

==========================  =================================================  ==========================
rule                        ``d_j``                                            variants
==========================  =================================================  ==========================
:class:`NoAscent`           none (``G = g_gamma``)                             SGD
:class:`BatchGradient`      ``g_{gamma_j}(x)`` per size-``m`` micro-batch      USAM, SAM, m-*, *-ON, ASAM, DNSAM
:class:`FullGradient`       ``g(x)``                                           n-USAM, n-SAM
:class:`Friendly`           ``g_gamma - sigma mu``, ``mu`` an EMA of ``g_gamma``  F-SAM, F-USAM
:class:`Reweighted`         ``sum_i p_i g_i``, ``p = softmax(lambda s)``       RW-SAM, RW-USAM
:class:`RandomDirection`    ``z ~ N(0, I)``                                    random-direction SAM
==========================  =================================================  ==========================
"""

from __future__ import annotations

import abc
import dataclasses
import importlib
from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._checks import Literal, check_integer, check_number
from .._problems._problem import Problem
from .._typing import Real
from ._hyperparameters import WithHyperparameters
from ._once import computed_once


class Directions(NamedTuple):
    """What :meth:`AbstractRule.directions` returns for one batch."""

    directions: PyTree  # d_j, leading axis k (micro-batches)
    descent_weights: Array | None  # (k, B/k) per-example weights of the descent, or None for plain means
    state: PyTree  # the rule's new state
    loss: Float[Array, ""]  # batch loss at x (NaN for rules that never evaluate it)


def _add_axis(t):
    return jax.tree_util.tree_map(lambda a: a[None], t)


def _nan_like(params):
    return jnp.asarray(jnp.nan, dtype=jax.tree_util.tree_leaves(params)[0].dtype)


def qualified_name(obj: Any) -> str | None:
    """``module:qualname`` of a module-level class or function (what :func:`import_named` imports), ``None`` for one
    defined inside a function."""
    qualname = getattr(obj, "__qualname__", "<")
    return None if "<" in qualname else f"{obj.__module__}:{qualname}"


def import_named(name: str) -> Any:
    """The object that ``module:qualname`` names; ``ImportError`` or ``AttributeError`` when there is none."""
    module, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module)
    for attr in qualname.split("."):
        obj = getattr(obj, attr)
    return obj


def type_name(cls: type) -> str:
    """A part's class as a config names it: the class name for the package's classes, ``module:qualname`` for a
    user's class that can be imported (so that two classes of one name are told apart)."""
    if cls.__module__.split(".")[0] == "sde_sam":
        return cls.__name__
    return qualified_name(cls) or cls.__name__


class AbstractRule(WithHyperparameters, abc.ABC):
    """The direction rule of a perturbation ``eps_j = rho T N(T M d_j)`` (DESIGN §2).

    Subclass it (as a frozen dataclass) and implement :meth:`directions`; override the static facts where they
    differ from the defaults. Everything else (discrete runs, ``with_optax``, the general and expected drifts,
    the leading and empirical diffusions, SVAG, weak-order studies) then works for the new rule unchanged.
    """

    #: False only for plain SGD (no ascent step at all).
    ascends: ClassVar[bool] = True
    #: The update's mean over batches is its full-data value (the direction does not depend on the batch and
    #: carries no randomness): the drift needs no expectation.
    linear_in_batch: ClassVar[bool] = False
    #: The rule carries a state from step to step (F-SAM's EMA); the SDE replaces it by :meth:`sde_state`.
    stateful: ClassVar[bool] = False
    #: The attributes a compiled run takes as traced values (:class:`WithHyperparameters`; ``()``: none).
    hyperparameters: ClassVar[tuple[str, ...]] = ()

    # -- static facts --------------------------------------------------------------------------------------
    @property
    def needs_monte_carlo(self) -> bool:
        """The update draws random numbers of its own (a probe, a random direction): batch expectations are
        Monte Carlo over the batch and those draws jointly, never an enumeration."""
        return False

    @property
    def descent_is_batch_gradient(self) -> bool:
        """The rho-free update ``G_0`` is the plain batch gradient ``g_gamma`` (its covariance is ``c(B) Sigma``)."""
        return True

    @property
    def differentiable(self) -> bool:
        """``x -> G(x; xi)`` is differentiated correctly by autodiff (the order-2 drift needs it)."""
        return True

    def num_micro_batches(self, batch_size: int) -> int:
        """``k``, the number of perturbations per step (``1`` unless the rule splits the batch)."""
        return 1

    def expectation_batch_size(self, batch_size: int) -> int:
        """Size of the batches the drift's expectation runs over: ``B``, or ``m`` when the update is a mean of
        per-micro-batch terms."""
        return batch_size

    def ascent_batch_size(self, batch_size: int, num_examples: int) -> int:
        """The ``m`` of the ascent gradient ``g_m`` whose norm ``E||g_m||`` training records."""
        return batch_size

    # -- the step ------------------------------------------------------------------------------------------
    def init(self, params: PyTree) -> PyTree:
        """The rule's state at the start of a run (``()`` for state-free rules)."""
        return ()

    def sde_state(self, problem: Problem, params: PyTree) -> PyTree:
        """The state the SDE uses at ``x`` (DESIGN §3.1); the init state for state-free rules."""
        return self.init(params)

    def advance(self, problem: Problem, params: PyTree, state: PyTree, batch: PyTree, key: PRNGKeyArray) -> PyTree:
        """The new state on a step that does not perturb (``rho = 0``)."""
        return state

    @abc.abstractmethod
    def directions(
        self, problem: Problem, params: PyTree, state: PyTree, batch: PyTree, key: PRNGKeyArray
    ) -> Directions:
        """The directions ``d_j`` (leading axis ``k``), descent weights, new state and batch loss at ``x``."""

    def effective_sample_size(
        self, problem: Problem, params: PyTree, batch: PyTree, key: PRNGKeyArray
    ) -> Float[Array, ""]:
        """Kish's effective sample size ``1 / sum_i p_i^2`` of the weights the step puts on the examples of
        ``batch``: ``B`` for a rule that weighs every example alike (every rule but :class:`Reweighted`)."""
        size = jax.tree_util.tree_leaves(batch)[0].shape[0]
        return jnp.asarray(size, dtype=jax.tree_util.tree_leaves(params)[0].dtype)

    def config(self) -> dict:
        """A JSON-friendly description (the rule's class and fields)."""
        fields = dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}
        return {"type": type_name(type(self)), **fields}


@dataclasses.dataclass(frozen=True)
class NoAscent(AbstractRule):
    """No ascent: ``G = g_gamma(x)`` (SGD)."""

    ascends: ClassVar[bool] = False
    linear_in_batch: ClassVar[bool] = True

    def directions(self, problem, params, state, batch, key):
        loss, g = jax.value_and_grad(problem.batch_loss)(params, batch)
        return Directions(_add_axis(jax.tree_util.tree_map(jnp.zeros_like, g)), None, state, loss)


@dataclasses.dataclass(frozen=True)
class BatchGradient(AbstractRule):
    """``d_j = g_{gamma_j}(x)``, the gradient of micro-batch ``j`` (size ``m``; ``None``: the whole batch,
    ``k = 1``)."""

    micro_batch_size: int | None = None

    def __post_init__(self):
        m = self.micro_batch_size
        if m is not None:
            check_integer("micro_batch_size", m, range_text="a positive integer or None")

    def num_micro_batches(self, batch_size):
        m = self.micro_batch_size
        if m is None:
            return 1
        if batch_size % m != 0 or m > batch_size:
            raise ValueError(
                f"`micro_batch_size`={m} must divide the batch size B={batch_size} (valid: divisors of {batch_size})"
            )
        return batch_size // m

    def expectation_batch_size(self, batch_size):
        return batch_size if self.micro_batch_size is None else self.micro_batch_size

    def ascent_batch_size(self, batch_size, num_examples):
        return self.micro_batch_size or batch_size

    def directions(self, problem, params, state, batch, key):
        B = jax.tree_util.tree_leaves(batch)[0].shape[0]
        k = self.num_micro_batches(B)
        if k == 1:  # no micro-batch axis to vmap over: a plain batch gradient is cheaper on some backends
            loss, g = jax.value_and_grad(problem.batch_loss)(params, batch)
            return Directions(_add_axis(g), None, state, loss)
        micro = jax.tree_util.tree_map(lambda a: a.reshape(k, B // k, *a.shape[1:]), batch)
        losses, grads = jax.vmap(jax.value_and_grad(problem.batch_loss), in_axes=(None, 0))(params, micro)
        return Directions(grads, None, state, jnp.mean(losses))


@dataclasses.dataclass(frozen=True)
class FullGradient(AbstractRule):
    """``d = g(x)``, the full-data gradient (n-SAM, n-USAM; Andriushchenko & Flammarion 2022)."""

    linear_in_batch: ClassVar[bool] = True

    def ascent_batch_size(self, batch_size, num_examples):
        return num_examples

    def directions(self, problem, params, state, batch, key):
        return Directions(_add_axis(problem.full_grad(params)), None, state, _nan_like(params))


@dataclasses.dataclass(frozen=True)
class Friendly(AbstractRule):
    """F-SAM (Li et al. 2024): ``d = g_gamma - sigma mu_{k-1}``, ``mu_k = lambda mu_{k-1} + (1 - lambda) g_gamma``,
    ``mu_0 = 0``; ``ema_decay`` is the paper's ``lambda``. The SDE takes ``mu = g`` (DESIGN §3.1)."""

    stateful: ClassVar[bool] = True
    hyperparameters: ClassVar[tuple[str, ...]] = ("sigma", "ema_decay", "one_minus_sigma", "one_minus_ema_decay")

    sigma: Real = 1.0
    ema_decay: Real = 0.9
    # 1 - sigma and 1 - lambda in double precision, set at construction; not fields (config, equality and
    # ``replace`` see sigma and lambda alone)
    one_minus_sigma = 0.0
    one_minus_ema_decay = 0.1

    def __post_init__(self):
        object.__setattr__(self, "sigma", check_number("sigma", self.sigma, upper=1.0))
        object.__setattr__(self, "ema_decay", check_number("ema_decay", self.ema_decay, upper=1.0, upper_open=True))
        object.__setattr__(self, "one_minus_sigma", 1.0 - self.sigma)
        object.__setattr__(self, "one_minus_ema_decay", 1.0 - self.ema_decay)

    def init(self, params):
        return jax.tree_util.tree_map(jnp.zeros_like, params)

    def sde_state(self, problem, params):
        return problem.full_grad(params)

    def advance(self, problem, params, state, batch, key):  # keep the EMA running even at rho = 0
        return self.directions(problem, params, state, batch, key).state

    def directions(self, problem, params, state, batch, key):
        loss, g = jax.value_and_grad(problem.batch_loss)(params, batch)
        d = jax.tree_util.tree_map(lambda gi, mu: gi - self.sigma * mu, g, state)
        new_mu = jax.tree_util.tree_map(lambda mu, gi: self.ema_decay * mu + self.one_minus_ema_decay * gi, state, g)
        return Directions(_add_axis(d), None, new_mu, loss)


SCORES = ("finite_difference", "exact")


def _rademacher_words(key: PRNGKeyArray, leaves: Sequence) -> tuple[Array, list[int]]:
    sizes = [int(np.size(leaf)) for leaf in leaves]
    return jr.bits(key, (-(-sum(sizes) // 32),), dtype=jnp.uint32), sizes


def _signs_of_words(words: Array, leaves: Sequence, sizes: Sequence[int]) -> list[Array]:
    """Bit ``t`` of ``words`` as ``+-1`` (set: ``+1``), split into arrays shaped like ``leaves``. Each leaf unpacks
    only the words its coordinates span, rather than slicing its signs out of all the unpacked words (cheaper on
    XLA:CPU; the timings are in docs/performance.md)."""
    out, start = [], 0
    for leaf, size in zip(leaves, sizes, strict=True):
        first, last = start // 32, -(-(start + size) // 32)
        bits = (words[first:last, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
        offset = start - 32 * first
        signs = (2.0 * bits.astype(jnp.float32) - 1.0).reshape(-1)[offset : offset + size]
        out.append(signs.reshape(jnp.shape(leaf)).astype(jnp.result_type(leaf)))
        start += size
    return out


def rademacher_like(key: PRNGKeyArray, params: PyTree) -> PyTree:
    """A Rademacher (+-1) pytree shaped like ``params``: one random bit per coordinate, 32 coordinates per
    32-bit word drawn (32x fewer PRNG evaluations than one draw per coordinate); bit ``t`` of the stream is
    coordinate ``t`` of the leaves flattened in order."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    words, sizes = _rademacher_words(key, leaves)
    # unpacked once: XLA:CPU would otherwise redo the unpacking in every consumer that broadcasts a leaf
    signs = computed_once(lambda w: tuple(_signs_of_words(w, leaves, sizes)), words)
    return jax.tree_util.tree_unflatten(treedef, list(signs))


def rademacher_shifted(key: PRNGKeyArray, params: PyTree, delta: Real) -> PyTree:
    """``params + delta * z`` with ``z = rademacher_like(key, params)``, bit for bit, formed in the same single
    evaluation that unpacks ``z`` (one pass over the parameters instead of an unpacking and an addition)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    words, sizes = _rademacher_words(key, leaves)

    def shift(w, leaves, delta):  # delta an operand: it may be traced (a conditional closes over no tracer)
        return tuple(a + delta * z for a, z in zip(leaves, _signs_of_words(w, leaves, sizes), strict=True))

    return jax.tree_util.tree_unflatten(treedef, list(computed_once(shift, words, tuple(leaves), delta)))


@dataclasses.dataclass(frozen=True)
class Reweighted(AbstractRule):
    """RW-SAM (Luo et al. 2025; docs/rw-sam.md): ascent along ``sum_i p_i g_i`` with Gibbs weights
    ``p = softmax(lambda s)`` of per-example scores ``s_i``; ``weights_in_descent`` selects the reading in which
    the descent is ``sum_i p_i grad f_i(x + eps)`` too.

    ``num_probes``: the finite-difference score averaged over that many Rademacher probes (one forward pass
    each; ``1`` is the paper's one-probe score). ``relative_scores``: scores divided by their batch mean before
    the softmax, so ``lambda`` means the same at any loss scale (``False``, the default, is the paper's literal
    reading, ``softmax(lambda s)`` of the raw scores)."""

    # ``fd_delta`` stays static: traced, XLA:CPU rounds the finite-difference scores differently from the program
    # with the constant (ulp-level, carried into the trajectories by the softmax), which would change results
    hyperparameters: ClassVar[tuple[str, ...]] = ("inverse_temperature",)

    inverse_temperature: Real = 1.0
    fd_delta: Real = 1e-3
    score: Literal["finite_difference", "exact"] = "finite_difference"
    weights_in_descent: bool = False
    num_probes: int = 1
    relative_scores: bool = False

    def __post_init__(self):
        object.__setattr__(self, "inverse_temperature", check_number("inverse_temperature", self.inverse_temperature))
        object.__setattr__(self, "fd_delta", check_number("fd_delta", self.fd_delta, lower_open=True))
        if self.score not in SCORES:
            raise ValueError(f"`score` must be 'finite_difference' or 'exact', got {self.score!r}")
        for name in ("weights_in_descent", "relative_scores"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be a bool, got {type(getattr(self, name)).__name__}")
        probes = self.num_probes
        object.__setattr__(self, "num_probes", check_integer("num_probes", probes))

    @property
    def needs_monte_carlo(self):
        return self.score == "finite_difference"

    @property
    def descent_is_batch_gradient(self):
        return not self.weights_in_descent

    @property
    def differentiable(self):
        return False  # the weights carry stop_gradient

    def scores(self, problem: Problem, params: PyTree, batch: PyTree, losses: Array, key: PRNGKeyArray) -> Array:
        """Scores ``s_i``: ``|f_i(x + delta z) - f_i(x)| / delta`` with one Rademacher ``z`` shared by the batch,
        or the exact ``||g_i(x)||``."""
        if self.score == "exact":
            g = problem.per_example_grads(params, batch)
            return jnp.sqrt(
                sum(jnp.sum(jnp.square(a.reshape(a.shape[0], -1)), axis=1) for a in jax.tree_util.tree_leaves(g))
            )

        def one_probe(k):
            shifted = rademacher_shifted(k, params, self.fd_delta)
            return jnp.abs(problem.example_losses(shifted, batch) - losses) / self.fd_delta

        if self.num_probes == 1:  # the probe drawn from the step's key itself (the one-probe stream unchanged)
            return one_probe(key)
        return jnp.mean(jax.vmap(one_probe)(jr.split(key, self.num_probes)), axis=0)

    def reweighting(self, problem, params, batch, losses, key) -> Array:
        """Gibbs weights ``p_i = softmax(lambda * s_i)`` over the batch (computed stably); with
        ``relative_scores`` the scores are ``s_i / mean_j s_j`` (all-zero scores give uniform weights)."""
        return self.weights_of_scores(self.scores(problem, params, batch, losses, key))

    def weights_of_scores(self, s: Float[Array, " B"]) -> Float[Array, " B"]:
        """``softmax(lambda * s)``, of ``s / mean(s)`` with ``relative_scores``."""
        if self.relative_scores:
            mean = jnp.mean(s)
            s = jnp.where(mean > 0, s / jnp.where(mean > 0, mean, 1.0), jnp.zeros_like(s))
        return jax.nn.softmax(self.inverse_temperature * s)

    def effective_sample_size(self, problem, params, batch, key) -> Array:
        """``1 / sum_i p_i^2`` of the step's Gibbs weights on ``batch`` (``B`` for uniform weights, 1 when one
        example takes all the mass)."""
        losses = problem.example_losses(params, batch)
        return effective_sample_size(self.reweighting(problem, params, batch, losses, key))

    def directions(self, problem, params, state, batch, key):
        form, out = problem.micro_batch_gradient, None
        if self.score == "exact" and form is not None and form.applies(problem.loss_fn, params, 1):
            # the problem's own form: ||g_i|| and sum_i p_i g_i from the layers' per-example inputs and signals
            weights_of = lambda sq: jax.lax.stop_gradient(self.weights_of_scores(jnp.sqrt(sq)))  # noqa: E731
            out = form.reweighted_gradient(params, batch, weights_of)
        if out is not None:
            losses, d, weights = out
        else:
            losses, vjp = jax.vjp(lambda p: problem.example_losses(p, batch), params)
            weights = jax.lax.stop_gradient(self.reweighting(problem, params, batch, losses, key))
            (d,) = vjp(weights.astype(losses.dtype))
        descent = weights[None] if self.weights_in_descent else None
        return Directions(_add_axis(d), descent, state, jnp.mean(losses))


def effective_sample_size(weights: Float[Array, " B"]) -> Float[Array, ""]:
    """Kish's effective sample size ``1 / sum_i p_i^2`` of normalized weights ``p`` (in ``[1, B]``)."""
    return 1.0 / jnp.sum(jnp.square(weights))


def normal_like(key: PRNGKeyArray, params: PyTree) -> PyTree:
    """A standard normal pytree shaped like ``params`` (one key per leaf)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jr.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [jr.normal(k, jnp.shape(a), jnp.result_type(a)) for k, a in zip(keys, leaves, strict=True)]
    )


@dataclasses.dataclass(frozen=True)
class RandomDirection(AbstractRule):
    """``d ~ N(0, I)``, drawn afresh each step from the step's key: a control for whether the gradient direction
    of the ascent matters. By symmetry its first-order drift is ``g``; the exact mean step is
    ``g + (rho^2 / 2) E[D^3 f[u, u]] + O(rho^4)`` (``u = N(T M d)``, for :class:`UnitNorm` on the sphere)."""

    @property
    def needs_monte_carlo(self):
        return True

    def directions(self, problem, params, state, batch, key):
        return Directions(_add_axis(normal_like(key, params)), None, state, _nan_like(params))
