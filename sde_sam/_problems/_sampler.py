"""Mini-batch samplers and their covariance factor ``c(b)`` (DESIGN §1).

A sampler is stateless: the indices of step ``k`` are a pure function of ``(key, k)``, so a run can be
replayed from its key and steps can be generated inside ``lax.scan`` without carrying sampler state.

Which sampler an SDE models exactly: the SDE's diffusion ``c(B) Sigma`` and every expectation over batches
assume one fresh batch per step, independent across steps. :class:`WithReplacement` (``B`` i.i.d. indices)
and :class:`UniformSubset` (a fresh uniform size-``B`` subset; Li, Tai & E 2019 and the m-sharpness
papers) are that setting exactly. :class:`WithoutReplacement` (shuffled epochs, what training code does)
has the same one-step law, so the same ``c(B)``, but the batches of one epoch are dependent (disjoint).
"""

from __future__ import annotations

import abc
import dataclasses

import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Int, PRNGKeyArray

from .._checks import check_integer


def _check_batch_size(batch_size) -> None:
    check_integer("batch_size", batch_size)


def _check_b_n(b: int, n: int) -> None:
    check_integer("n", n, note=" (the number of examples)")
    check_integer("b", b, note=" (the batch size)")


class AbstractSampler(abc.ABC):
    """A batch sampler: the indices of step ``k`` as a pure function of ``(key, k)`` and the factor ``c(b)``.

    Subclasses are small frozen dataclasses with a ``batch_size`` field and a class-level ``with_replacement`` flag
    (whether the one-step law is ``B`` i.i.d. indices, ``True``, or a uniform size-``B`` subset, ``False``).
    """

    batch_size: int
    with_replacement: bool

    @abc.abstractmethod
    def check(self, n: int) -> None:
        """Raise ``ValueError`` when the sampler cannot draw from ``n`` examples."""

    @abc.abstractmethod
    def indices(self, key: PRNGKeyArray, step: Int[Array, ""] | int, n: int) -> Int[Array, " B"]:
        """The indices of step ``step`` (shape ``(batch_size,)``)."""

    @abc.abstractmethod
    def factor(self, b: int, n: int) -> float:
        """``c(b)``: the covariance of a size-``b`` batch mean gradient is ``c(b) Sigma`` (DESIGN §1)."""


def _without_replacement_factor(b: int, n: int) -> float:
    _check_b_n(b, n)
    if b > n:
        raise ValueError(f"`b`={b} exceeds n={n}: without replacement it must be in [1, {n}]")
    if n == 1:
        return 0.0
    return (n - b) / (b * (n - 1))


def _check_not_above_n(batch_size: int, n: int) -> None:
    _check_b_n(batch_size, n)
    if batch_size > n:
        raise ValueError(
            f"`batch_size`={batch_size} exceeds the number of examples n={n}; without replacement "
            f"it must be in [1, {n}]"
        )


@dataclasses.dataclass(frozen=True)
class WithReplacement(AbstractSampler):
    """Each step draws ``batch_size`` indices i.i.d. uniformly from ``{0..n-1}``.

    Covariance of the batch-mean gradient: ``c(b) Sigma`` with ``c(b) = 1/b`` (DESIGN §1).
    """

    batch_size: int

    def __post_init__(self):
        _check_batch_size(self.batch_size)

    with_replacement: bool = dataclasses.field(default=True, init=False)

    def check(self, n: int) -> None:
        """Nothing to check: any batch size works with replacement."""
        _check_b_n(self.batch_size, n)

    def indices(self, key: PRNGKeyArray, step: Int[Array, ""] | int, n: int) -> Int[Array, " B"]:
        """The indices of step ``step``: ``batch_size`` uniform draws from ``range(n)``."""
        return jr.randint(jr.fold_in(key, step), (self.batch_size,), 0, n)

    def factor(self, b: int, n: int) -> float:
        """``c(b) = 1/b``."""
        _check_b_n(b, n)
        return 1.0 / b


class _SubsetLaw(AbstractSampler):
    """The samplers whose one-step law is a uniform size-``b`` subset: ``b <= n`` and ``c(b) = (n-b)/(b(n-1))``."""

    def __post_init__(self):
        _check_batch_size(self.batch_size)

    def check(self, n: int) -> None:
        """``batch_size`` may not exceed ``n`` without replacement."""
        _check_not_above_n(self.batch_size, n)

    def factor(self, b: int, n: int) -> float:
        """``c(b) = (n - b) / (b (n - 1))`` (``0`` at ``b = n``; ``0`` when ``n = 1``)."""
        return _without_replacement_factor(b, n)


@dataclasses.dataclass(frozen=True)
class WithoutReplacement(_SubsetLaw):
    """Shuffled epochs: each epoch is a fresh random permutation cut into ``n // batch_size`` batches.

    An incomplete last batch is dropped. Marginally each batch is a uniform size-``b`` subset, so the
    batch-mean gradient has covariance ``c(b) Sigma`` with ``c(b) = (n - b) / (b (n - 1))`` (DESIGN §1).
    """

    batch_size: int
    with_replacement: bool = dataclasses.field(default=False, init=False)

    def indices(self, key: PRNGKeyArray, step: Int[Array, ""] | int, n: int) -> Int[Array, " B"]:
        """The indices of step ``step``: batch ``step % (n // B)`` of epoch ``step // (n // B)``."""
        self.check(n)
        per_epoch = n // self.batch_size
        epoch, position = jnp.divmod(step, per_epoch)
        perm = jr.permutation(jr.fold_in(key, epoch), n)
        return jax.lax.dynamic_slice_in_dim(perm, position * self.batch_size, self.batch_size)


@dataclasses.dataclass(frozen=True)
class UniformSubset(_SubsetLaw):
    """Each step draws a fresh uniformly random size-``batch_size`` subset, independent across steps.

    The setting of Li, Tai & E (2019) and of the m-sharpness analysis: the one-step law equals that of
    :class:`WithoutReplacement` (so ``c(b) = (n - b) / (b (n - 1))``), but steps are independent, which is
    what the SDE models exactly (DESIGN §1).
    """

    batch_size: int
    with_replacement: bool = dataclasses.field(default=False, init=False)

    def indices(self, key: PRNGKeyArray, step: Int[Array, ""] | int, n: int) -> Int[Array, " B"]:
        """The first ``batch_size`` entries of a fresh permutation of ``range(n)`` drawn from ``fold_in(key, step)``."""
        self.check(n)
        return jr.permutation(jr.fold_in(key, step), n)[: self.batch_size]


Sampler = AbstractSampler

SAMPLERS = "WithReplacement, WithoutReplacement or UniformSubset"


def check_is_sampler(sampler) -> None:
    """``TypeError`` unless ``sampler`` is a :class:`AbstractSampler`."""
    if not isinstance(sampler, AbstractSampler):
        raise TypeError(f"`sampler` must be a sampler ({SAMPLERS}), got {type(sampler).__name__}")


def sampling_factor(sampler: Sampler, b: int, n: int) -> float:
    """``c(b)``: the covariance of a size-``b`` batch mean is ``c(b) Sigma`` under ``sampler`` (DESIGN §1)."""
    check_is_sampler(sampler)
    return sampler.factor(b, n)
