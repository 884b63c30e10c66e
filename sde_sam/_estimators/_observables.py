"""Observables recorded along discrete runs and SDE paths: ``phi(problem, params) -> scalar``."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree

from .._checks import check_integer
from .._problems._problem import Problem, tree_norm_sq

Observable = Callable[[Problem, PyTree], Float[Array, ""]]


class AbstractObservable(abc.ABC):
    """A recorded quantity ``phi(problem, params) -> scalar`` (docs/estimators.md, "Observables"), one class per
    quantity, its estimator sizes as fields. The one registry for :func:`sde_sam.run_discrete`,
    :func:`sde_sam.simulate`, :func:`sde_sam.validate` and the training recorder: :data:`REGISTRY` maps names to
    default instances. :meth:`bind` fills in what a quantity takes from the run (the variant's micro-batch size,
    its rule, the sampler) when the run starts. ``cost`` states the work of one evaluation."""

    cost: ClassVar[str]
    #: The values the quantity can take (``None``: any); a value recorded outside is refused
    #: (:meth:`Record.check_values`).
    valid_range: ClassVar[tuple[float, float] | None] = None

    def bind(self, problem: Problem, variant: Any, sampler: Any) -> AbstractObservable:
        return self

    @abc.abstractmethod
    def __call__(self, problem: Problem, params: PyTree) -> Array: ...

    def init_state(self, problem: Problem, params: PyTree) -> PyTree:
        """What the quantity carries from one recorded point of a run to the next (default: nothing)."""
        return ()

    def observe(self, problem: Problem, params: PyTree, state: PyTree) -> tuple[Array, PyTree]:
        """The value at ``params`` given the state left by the previous recorded point of the same run, and the
        state for the next (default: the stateless value)."""
        return self(problem, params), state


@dataclasses.dataclass(frozen=True)
class Loss(AbstractObservable):
    """The full loss ``f(x)``."""

    cost: ClassVar[str] = "one forward pass over the n training examples"

    def __call__(self, problem, params):
        return problem.full_loss(params)


@dataclasses.dataclass(frozen=True)
class ParamNormSq(AbstractObservable):
    """``||x||^2``."""

    cost: ClassVar[str] = "negligible (a sum over the parameters)"

    def __call__(self, problem, params):
        return tree_norm_sq(params)


@dataclasses.dataclass(frozen=True)
class GradNormSq(AbstractObservable):
    """``||g||^2``, ``g`` the full gradient."""

    cost: ClassVar[str] = "one forward and backward pass over the n training examples"

    def __call__(self, problem, params):
        return tree_norm_sq(problem.full_grad(params))


@dataclasses.dataclass(frozen=True)
class Accuracy(AbstractObservable):
    """Training accuracy (problems with an accuracy function)."""

    cost: ClassVar[str] = "one forward pass over the n training examples"
    valid_range: ClassVar[tuple[float, float] | None] = (0.0, 1.0)

    def __call__(self, problem, params):
        return problem.accuracy(params)


@dataclasses.dataclass(frozen=True)
class TestLoss(AbstractObservable):
    """Loss on the problem's test data."""

    cost: ClassVar[str] = "one forward pass over the test examples"

    def __call__(self, problem, params):
        return problem.test_loss(params)


@dataclasses.dataclass(frozen=True)
class TestAccuracy(AbstractObservable):
    """Accuracy on the problem's test data."""

    cost: ClassVar[str] = "one forward pass over the test examples"
    valid_range: ClassVar[tuple[float, float] | None] = (0.0, 1.0)

    def __call__(self, problem, params):
        return problem.accuracy(params, problem.test_data)


@dataclasses.dataclass(frozen=True)
class TraceSigma(AbstractObservable):
    """Exact ``tr Sigma = mean_i ||g_i||^2 - ||g||^2`` from per-example gradients (DESIGN §4), ``chunk_size``
    examples at a time; on a problem whose examples interact through BatchNorm it binds to
    :class:`TraceSigmaMinibatch`."""

    chunk_size: int | None = 256

    cost: ClassVar[str] = "n per-example gradients (one backward pass per example, chunked)"

    def bind(self, problem, variant, sampler):
        from .._problems._networks import is_batch_norm_problem

        if is_batch_norm_problem(problem):
            return TraceSigmaMinibatch().bind(problem, variant, sampler)
        return self

    def __call__(self, problem, params):
        from ._noise import trace_sigma

        return trace_sigma(problem, params, chunk_size=self.chunk_size)


@dataclasses.dataclass(frozen=True)
class TraceSigmaMinibatch(AbstractObservable):
    """``tr Sigma`` from the spread of ``num_batches`` batch gradients drawn by the run's sampler, ``/ c(B)``
    (no per-example gradients: for BatchNorm networks and large models). Fixed key ``seed``."""

    num_batches: int = 32
    seed: int = 12345
    sampler: Any = None

    cost: ClassVar[str] = "num_batches batch gradients (one forward and backward pass of B examples each)"

    def bind(self, problem, variant, sampler):
        return self if self.sampler is not None else dataclasses.replace(self, sampler=sampler)

    def __call__(self, problem, params):
        from ._noise import trace_sigma_minibatch

        if self.sampler is None:
            raise ValueError("TraceSigmaMinibatch needs a sampler: give sampler=, or record it in a run")
        return trace_sigma_minibatch(problem, params, self.sampler, jr.key(self.seed), self.num_batches).value


@dataclasses.dataclass(frozen=True)
class LambdaMax(AbstractObservable):
    """The top Hessian eigenvalue by Lanczos with ``num_matvecs`` Hessian-vector products (at most the dimension;
    :func:`sde_sam.curvature.top_eigenvalues`), start vector from the fixed key ``seed``.

    With ``warm_matvecs`` set, a run records it warm-started (docs/estimators.md, "Observables"): the first
    recorded point runs ``num_matvecs`` products from the key's vector, every later one ``warm_matvecs`` products
    from the top Ritz vector of the run's previous recorded point, which is already close to the top eigenvector
    when the points are near; the Krylov space holds that vector, so the estimate is at least its Rayleigh
    quotient. Outside a run (``__call__``) it is the cold estimate."""

    num_matvecs: int = 20
    seed: int = 12345
    warm_matvecs: int | None = None

    cost: ClassVar[str] = (
        "num_matvecs Hessian-vector products over the n training examples (each about two forward and backward "
        "passes); warm_matvecs of them at each recorded point after a run's first when warm-started"
    )

    def __post_init__(self):
        for name in ("num_matvecs", "warm_matvecs"):
            v = getattr(self, name)
            if v is not None or name == "num_matvecs":
                check_integer(name, v, note=" (LambdaMax)")

    def __call__(self, problem, params):
        from ._curvature import top_eigenvalues

        k = min(self.num_matvecs, problem.dim)
        return top_eigenvalues(problem, params, 1, jr.key(self.seed), num_matvecs=k).values[0]

    def init_state(self, problem, params):
        if self.warm_matvecs is None:
            return ()
        flat = ravel_pytree(params)[0]
        return jnp.zeros_like(flat), jnp.zeros((), bool)  # (the previous top Ritz vector, whether there is one)

    def observe(self, problem, params, state):
        warm_matvecs = self.warm_matvecs
        if warm_matvecs is None:
            return self(problem, params), state
        from ._noise import _operator, lanczos_top

        mv, flat = _operator(problem, params, problem.data, "hessian", None)
        d = flat.shape[0]

        def cold(_):
            return lanczos_top(mv, flat, 1, jr.key(self.seed), min(self.num_matvecs, d))

        def warm(v):
            return lanczos_top(mv, flat, 1, jr.key(self.seed), min(warm_matvecs, d), v0=v)

        previous, started = state
        eigs = jax.lax.cond(started, warm, cold, previous)
        return eigs.values[0], (eigs.vectors[0], jnp.ones((), bool))


@dataclasses.dataclass(frozen=True)
class TraceHessian(AbstractObservable):
    """``tr H`` by Hutchinson with ``num_probes`` Rademacher probes from the fixed key ``seed``."""

    num_probes: int = 8
    seed: int = 12345

    cost: ClassVar[str] = "num_probes Hessian-vector products over the n training examples"

    def __call__(self, problem, params):
        from ._curvature import trace_hessian

        return trace_hessian(problem, params, jr.key(self.seed), num_probes=self.num_probes).value


@dataclasses.dataclass(frozen=True)
class BatchGradNorm(AbstractObservable):
    """``E||g_m||`` over ``num_batches`` micro-batches of size ``m`` (default: the run's ascent batch size, the
    variant's ``micro_batch_size``, ``B``, or ``n`` for n-SAM), fixed key ``seed`` (m-SAM's regularizer)."""

    m: int | None = None
    num_batches: int = 32
    seed: int = 12345

    cost: ClassVar[str] = "num_batches gradients of m examples each"

    def bind(self, problem, variant, sampler):
        if self.m is not None:
            return self
        return dataclasses.replace(self, m=variant.rule.ascent_batch_size(sampler.batch_size, problem.num_examples))

    def __call__(self, problem, params):
        from .._problems._sampler import WithoutReplacement
        from ._noise import expected_batch_grad_norm

        if self.m is None:
            raise ValueError("BatchGradNorm needs m: give m=, or record it in a run (m from the variant)")
        m = min(self.m, problem.num_examples)
        return expected_batch_grad_norm(
            problem, params, WithoutReplacement(m), jr.key(self.seed), self.num_batches
        ).value.value


@dataclasses.dataclass(frozen=True)
class EffectiveSampleSize(AbstractObservable):
    """Kish's ``1 / sum_i p_i^2`` of the weights the variant's rule puts on a batch (RW-SAM's Gibbs weights; ``B``
    for rules that weigh examples alike), mean over ``num_batches`` batches of the run's sampler, key ``seed``."""

    num_batches: int = 32
    seed: int = 12345
    rule: Any = None
    sampler: Any = None

    cost: ClassVar[str] = "num_batches evaluations of the rule's weights (RW-SAM: its scores of B examples)"

    def bind(self, problem, variant, sampler):
        return dataclasses.replace(self, rule=self.rule or variant.rule, sampler=self.sampler or sampler)

    def __call__(self, problem, params):
        from ._noise import expected_effective_sample_size

        if self.rule is None or self.sampler is None:
            raise ValueError("EffectiveSampleSize needs a rule and a sampler: record it in a run")
        return expected_effective_sample_size(
            self.rule, problem, params, self.sampler, jr.key(self.seed), self.num_batches
        ).value


@dataclasses.dataclass(frozen=True)
class Distance(AbstractObservable):
    """``||x - x_0||``, ``x_0`` the problem's initial point."""

    cost: ClassVar[str] = "negligible (a sum over the parameters)"

    def __call__(self, problem, params):
        diff = jax.tree_util.tree_map(jnp.subtract, params, problem.init_params)
        return jnp.sqrt(tree_norm_sq(diff))


#: Every observable by name, a default instance each: the names of :func:`observables` and of the training recorder.
REGISTRY: dict[str, AbstractObservable] = {
    "loss": Loss(),
    "param_norm_sq": ParamNormSq(),
    "grad_norm_sq": GradNormSq(),
    "accuracy": Accuracy(),
    "test_loss": TestLoss(),
    "test_accuracy": TestAccuracy(),
    "trace_sigma": TraceSigma(),
    "trace_sigma_minibatch": TraceSigmaMinibatch(),
    "lambda_max": LambdaMax(),
    "trace_hessian": TraceHessian(),
    "batch_grad_norm": BatchGradNorm(),
    "effective_sample_size": EffectiveSampleSize(),
    "distance": Distance(),
}


@dataclasses.dataclass(frozen=True)
class Record:
    """Which observables to record, and how often (every ``every`` steps, the initial point included)."""

    names: tuple[str, ...]
    fns: tuple[Observable, ...]
    every: int = 1

    def bind(self, problem: Problem, variant: Any, sampler: Any) -> Record:
        """The record with each :class:`AbstractObservable` bound to the run (:meth:`AbstractObservable.bind`)."""
        fns = tuple(fn.bind(problem, variant, sampler) if isinstance(fn, AbstractObservable) else fn for fn in self.fns)
        return dataclasses.replace(self, fns=fns)

    def evaluate(self, problem: Problem, params: PyTree) -> dict[str, Array]:
        """The values at one point, outside a run (each observable from its initial state: a cold estimate)."""
        return self.observe(problem, params, self.init_state(problem, params))[0]

    def init_state(self, problem: Problem, params: PyTree) -> tuple:
        """Each observable's state at the start of a run (:meth:`AbstractObservable.init_state`)."""
        return tuple(fn.init_state(problem, params) if isinstance(fn, AbstractObservable) else () for fn in self.fns)

    def observe(self, problem: Problem, params: PyTree, states: tuple) -> tuple[dict[str, Array], tuple]:
        """The values at a recorded point of a run and the states for its next one."""
        vals, new = {}, []
        for name, fn, st in zip(self.names, self.fns, states, strict=True):
            if isinstance(fn, AbstractObservable):
                v, st = fn.observe(problem, params, st)
            else:
                v = fn(problem, params)
            vals[name] = jnp.asarray(v)
            new.append(st)
        return vals, tuple(new)

    def check_values(self, values: dict[str, Any]) -> None:
        """:func:`check_values` over this record's observables."""
        check_values(dict(zip(self.names, self.fns, strict=True)), values)

    def check(self, problem: Problem) -> None:
        """Evaluate shapes once, so an observable the problem can't support fails before a long run."""
        for name, fn in zip(self.names, self.fns, strict=True):
            try:
                out = jax.eval_shape(fn, problem, problem.init_params)
            except ValueError as err:
                raise ValueError(f"observable {name!r} is not available for problem {problem.name!r}: {err}") from err
            if out.shape != ():
                raise ValueError(f"observable {name!r} must return a scalar, got shape {out.shape}")


def observables(*names: str, every: int = 1, **custom: Observable) -> Record:
    """A :class:`Record` of built-in observables by name plus user functions ``fn(problem, params)``.

    Names (:data:`REGISTRY`; each class documents its estimator and cost): ``loss`` (full loss ``f``),
    ``param_norm_sq`` (``||x||^2``), ``grad_norm_sq`` (``||g||^2``), ``accuracy``, ``test_loss``, ``test_accuracy``,
    ``trace_sigma`` (exact ``tr Sigma``), ``trace_sigma_minibatch``, ``lambda_max``, ``trace_hessian``,
    ``batch_grad_norm``, ``effective_sample_size``, ``distance``. ``custom`` values may be functions or
    :class:`AbstractObservable` instances with other estimator sizes (``lambda_max=LambdaMax(num_matvecs=40)``).
    """
    check_integer("every", every, note=" number of steps")
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown observable(s) {unknown}; built-in names: {', '.join(REGISTRY)} (or pass name=fn)")
    for name, fn in custom.items():
        if not callable(fn):
            raise TypeError(f"custom observable {name!r} must be callable fn(problem, params) -> scalar")
    all_names = tuple(names) + tuple(custom)
    if not all_names:
        raise ValueError("`observables` needs at least one name")
    if len(set(all_names)) != len(all_names):
        raise ValueError(f"duplicate observable names in {all_names}")
    return Record(all_names, tuple(REGISTRY[n] for n in names) + tuple(custom.values()), int(every))


def check_values(observables: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    """Refuse recorded values outside an observable's ``valid_range`` (an accuracy above 1 means the problem's
    ``accuracy_fn`` is not a 0/1 score, which its check at construction cannot see at every point)."""
    for name, fn in observables.items():
        bounds = getattr(fn, "valid_range", None)
        if bounds is None or name not in values:
            continue
        v = np.asarray(values[name], np.float64)
        bad = np.argwhere(np.isfinite(v) & ((v < bounds[0]) | (v > bounds[1])))
        if len(bad):
            where = tuple(int(i) for i in bad[0])
            why = (
                ": the problem's `accuracy_fn` must give 1 for a correct example and 0 otherwise at every point, "
                "not only at `init_params`"
                if isinstance(fn, (Accuracy, TestAccuracy))
                else ""
            )
            raise ValueError(
                f"observable {name!r} recorded {v[where]:.6g} at index {where} (run/path, record), outside "
                f"[{bounds[0]:g}, {bounds[1]:g}]{why}"
            )
