"""One way to make a frozen dataclass a pytree whose leaves are some of its fields (imports nothing of the package).

``jax.tree_util.register_dataclass`` rebuilds a node by calling the class, so its ``__post_init__`` would run on
tracers and on the placeholder leaves JAX puts in a tree (``vmap``'s ``in_axes``, ``tree_structure``) and refuse
them. :func:`fields_pytree` rebuilds a node by setting its fields without calling the class, as equinox's modules
do: the validation runs once, when a user builds the object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import jax

T = TypeVar("T", bound=type)


def fields_pytree(*, leaves: tuple[str, ...], static: tuple[str, ...]) -> Callable[[T], T]:
    """Class decorator: the fields ``leaves`` are the pytree's children (keyed by name), the fields ``static`` its
    auxiliary data (hashed into a compiled program's key). Every field the object holds must be in one of them.
    A subclass that should be a pytree of its own type is decorated again."""
    leaves, static = tuple(leaves), tuple(static)
    if set(leaves) & set(static):
        raise ValueError(f"fields cannot be both leaves and static: {sorted(set(leaves) & set(static))}")

    def register(cls: T) -> T:
        def flatten_with_keys(obj):
            return tuple((jax.tree_util.GetAttrKey(n), getattr(obj, n)) for n in leaves), _static(obj)

        def flatten(obj):
            return tuple(getattr(obj, n) for n in leaves), _static(obj)

        def _static(obj):
            return tuple(getattr(obj, n) for n in static)

        def unflatten(aux, children):
            obj = object.__new__(cls)  # no __init__: the leaves may be tracers or placeholders
            for name, value in (*zip(static, aux, strict=True), *zip(leaves, children, strict=True)):
                object.__setattr__(obj, name, value)
            return obj

        jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten)
        return cls

    return register
