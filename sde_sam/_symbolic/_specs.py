"""What the sympy layer knows of each rule, dispatched on the rule's type (DESIGN §5).

:func:`symbolic_spec_of` gives the :class:`~sde_sam.symbolic.Spec` fields of a rule (``rule``,
``micro_batch_size``, ``weights_in_descent``), or ``None`` where sympy does not derive it;
:func:`symbolic_parameters_of` the values of the symbols a derivation keeps (F-SAM's ``sigma``, RW-SAM's ``lam``).
Both are registered here for the built-in rules; a rule of your own registers with
``symbolic_spec_of.register(MyRule)``.
"""

from __future__ import annotations

import functools
from typing import Any

from .._variants._rules import AbstractRule, BatchGradient, Friendly, FullGradient, NoAscent, Reweighted


@functools.singledispatch
def symbolic_spec_of(rule: AbstractRule, variant) -> dict[str, Any] | None:
    """The :class:`~sde_sam.symbolic.Spec` fields of ``rule`` in ``variant``; ``None``: no symbolic derivation."""
    return None


@functools.singledispatch
def symbolic_parameters_of(rule: AbstractRule) -> dict[str, float]:
    """Values of the symbols a derivation of ``rule`` keeps (none by default)."""
    return {}


@symbolic_spec_of.register
def _(rule: NoAscent, variant):
    return {"rule": "none"}


@symbolic_spec_of.register
def _(rule: BatchGradient, variant):
    return {"rule": "batch", "micro_batch_size": rule.micro_batch_size}


@symbolic_spec_of.register
def _(rule: FullGradient, variant):
    return {"rule": "full"}


@symbolic_spec_of.register
def _(rule: Friendly, variant):
    return {"rule": "friendly"}


@symbolic_parameters_of.register
def _(rule: Friendly):
    return {"sigma": float(rule.sigma)}


@symbolic_spec_of.register
def _(rule: Reweighted, variant):
    if rule.score != "exact":
        raise ValueError("RW-SAM is derived symbolically with the exact score only: use `score='exact'`")
    if rule.relative_scores:
        raise ValueError("RW-SAM is derived symbolically with raw scores only: use `relative_scores=False`")
    return {"rule": "reweighted", "weights_in_descent": rule.weights_in_descent}


@symbolic_parameters_of.register
def _(rule: Reweighted):
    return {"lam": float(rule.inverse_temperature)}
