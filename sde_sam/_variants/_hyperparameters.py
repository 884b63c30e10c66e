"""Parts of a variant whose numbers a compiled run takes as traced values (docs/sde.md, "Hyperparameters are
traced values")."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import jax


class WithHyperparameters:
    """A pytree whose leaves are the attributes named in :attr:`hyperparameters` (every other attribute is
    static): a run compiled for one value of them serves every value. Subclasses are registered on creation.

    Numbers the step derives from them (``1 - lambda``) are attributes too, computed at construction in double
    precision, so that the traced program computes with the numbers a constant-folded one used."""

    hyperparameters: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        jax.tree_util.register_pytree_node(cls, _flatten, functools.partial(_unflatten, cls))


def _flatten(obj: Any) -> tuple[tuple, Any]:
    names = type(obj).hyperparameters
    if not names:
        return (), obj  # wholly static, as before
    attrs = vars(obj)
    return tuple(attrs[n] for n in names), tuple((k, v) for k, v in attrs.items() if k not in names)


def _unflatten(cls: type, static: Any, leaves: tuple) -> Any:
    if not cls.hyperparameters:
        return static
    obj = object.__new__(cls)  # no validation: the leaves may be tracers
    for name, value in (*static, *zip(cls.hyperparameters, leaves, strict=True)):
        object.__setattr__(obj, name, value)
    return obj
