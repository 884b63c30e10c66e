"""A choice of the SDE model (a drift, a diffusion) given as an object or by name (DESIGN §3.4)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


def as_choice(
    value: Any, base: type[T], classes: dict[str, type[T]], argname: str, examples: str, *, only_taken: bool, **options
) -> T:
    """``value`` as a ``base``: an instance as it is (no ``options``), a name of ``classes`` as its class built with
    ``options`` (``only_taken``: those of them that are fields of the class; else all, an unknown one an error);
    else a clear error naming ``argname``."""
    if isinstance(value, base):
        if options:
            raise TypeError(f"options {sorted(options)} go to the {argname} object itself, not beside {value!r}")
        return value
    if not isinstance(value, str) or value not in classes:
        raise ValueError(
            f"`{argname}` must be one of {tuple(classes)} or a sde_sam.sde.{base.__name__} ({examples}), got {value!r}"
        )
    cls = classes[value]
    if only_taken:
        taken = {f.name for f in dataclasses.fields(cls)}  # pyright: ignore[reportArgumentType]
        options = {k: v for k, v in options.items() if k in taken}
    return cls(**options)
