"""The checks of arguments that every layer shares: integers and numbers in a range, PRNG keys, chunk sizes.

Each raises before any expensive work, with a message that names the argument and its valid range. This module
imports nothing of the package, so any layer may use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

# ``Literal["a", "b"]`` of this module: a string option. Static checkers (and ruff, through its typing-modules) read
# it as ``typing.Literal``; at run time it is ``str``, so a run-time type checker lets a wrong value through to the
# argument's own check, whose message names the argument and its valid values.
if TYPE_CHECKING:
    from typing import Literal
else:

    class _Literal:
        def __getitem__(self, _values):
            return str

    Literal = _Literal()

T = TypeVar("T")


def is_integer(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """A Python or numpy real number (integers included), not a bool."""
    return isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)


def check_integer(
    name: str,
    value: Any,
    low: int = 1,
    high: int | None = None,
    *,
    range_text: str | None = None,
    note: str = "",
) -> int:
    """``value`` as an ``int``; ``ValueError`` naming ``name`` unless it is an integer in ``[low, high]`` (no upper
    end for ``high=None``). ``range_text`` words the range (for
    bounds with names, ``"[k=3, d=40]"``) and ``note`` follows it in the message."""
    ok = is_integer(value) and value >= low and (high is None or value <= high)
    if not ok:
        if range_text is None:
            if high is not None:
                range_text = f"an integer in [{low}, {high}]"
            else:
                range_text = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"`{name}` must be {range_text}{note}, got {value!r}")
    return int(value)


def check_number(
    name: str,
    value: Any,
    lower: float = 0.0,
    upper: float | None = None,
    upper_open: bool = False,
    lower_open: bool = False,
) -> float:
    """``value`` as a Python float; ``ValueError`` unless it is a finite real in the stated range (numpy scalars
    are accepted; the message names ``name`` and the range)."""
    ok = is_real(value) and math.isfinite(value)
    ok = ok and (value > lower if lower_open else value >= lower)
    ok = ok and (upper is None or (value < upper if upper_open else value <= upper))
    if not ok:
        lo = f"({lower:g}" if lower_open else f"[{lower:g}"
        rng = f"{lo}, inf)" if upper is None else f"{lo}, {upper:g}{')' if upper_open else ']'}"
        raise ValueError(f"`{name}` must be a finite number in {rng}, got {value!r}")
    return float(value)


def check_positive(name: str, value: Any, integer: bool = False) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is a finite positive number (an integer >= 1 if asked)."""
    if integer:
        check_integer(name, value)
    else:
        check_number(name, value, lower_open=True)


def check_chunk_size(chunk_size: Any) -> None:
    """A chunk size: a positive integer, or ``None`` for no chunking."""
    if chunk_size is not None:
        check_integer("chunk_size", chunk_size, range_text="a positive integer or None")


def check_key(key: Any, name: str = "key") -> None:
    """``TypeError`` unless ``key`` is one typed PRNG key (``jax.random.key(seed)``)."""
    ok = isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key) and key.ndim == 0
    if not ok:
        raise TypeError(f"`{name}` must be one typed PRNG key, jax.random.key(seed); got {_describe(key)}")


def _describe(value: Any) -> str:
    if isinstance(value, jax.Array | np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__


def choose(name: str, value: Any, table: Mapping[str, T]) -> T:
    """The entry of ``table`` (a family of choices by name) that the option ``name`` names; a clear error with the
    valid names otherwise. The one place a string option becomes what it stands for."""
    if not isinstance(value, str) or value not in table:
        raise ValueError(f"`{name}` must be one of {', '.join(repr(k) for k in table)}, got {value!r}")
    return table[value]
