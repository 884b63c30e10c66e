"""Problems from equinox and flax models: their arrays become the parameters, the rest stays static (DESIGN §1).

* :func:`from_equinox`: ``params, static = eqx.partition(model, eqx.is_inexact_array)``; the loss sees
  ``eqx.combine(params, static)``, the module itself.
* :func:`from_flax`: an ``nnx`` module is split into its ``nnx.Param`` state (the parameters) and the rest (kept
  fixed); the loss sees ``nnx.merge(...)``, the module. A linen module comes with its variables
  (``model.init(key, x)``): the parameters are the variables' ``"params"`` collection and the loss sees
  ``apply(*inputs) = model.apply(variables, *inputs)``.

The loss is ``loss(model, example) -> scalar``, one example at a time, as :class:`~sde_sam.Problem` needs. Both
libraries are optional extras (``pip install -e ".[equinox]"`` / ``".[flax]"``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from jaxtyping import PyTree

from ._problem import Problem


def _require(module: str, extra: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f'{module} is not installed: pip install -e ".[{extra}]" (or pip install {extra})') from err


def from_equinox(
    loss: Callable[[Any, PyTree], Any],
    data: PyTree,
    model: Any,
    *,
    name: str = "equinox",
    accuracy: Callable[[Any, PyTree], Any] | None = None,
    test_data: PyTree | None = None,
) -> Problem:
    """A :class:`~sde_sam.Problem` whose parameters are the floating arrays of the equinox module ``model``.

    ``loss(model, example)`` and ``accuracy(model, example)`` receive the module rebuilt from the current
    parameters; parameter paths (for SAM-ON masks) are the module's attribute paths, e.g. ``"layers/0/weight"``.
    """
    eqx = _require("equinox", "equinox")
    if not isinstance(model, eqx.Module):
        raise TypeError(f"`model` must be an equinox.Module, got {type(model).__name__}")
    if not callable(loss):
        raise TypeError(f"`loss` must be callable loss(model, example) -> scalar, got {type(loss).__name__}")
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def loss_fn(p, example):
        return loss(eqx.combine(p, static), example)

    acc = None if accuracy is None else (lambda p, example: accuracy(eqx.combine(p, static), example))
    return Problem(loss_fn, data, params, name, acc, test_data)


def from_flax(
    loss: Callable[[Any, PyTree], Any],
    data: PyTree,
    model: Any,
    variables: PyTree | None = None,
    *,
    name: str = "flax",
    accuracy: Callable[[Any, PyTree], Any] | None = None,
    test_data: PyTree | None = None,
) -> Problem:
    """A :class:`~sde_sam.Problem` from a flax model: an ``nnx.Module`` (its ``nnx.Param`` state are the parameters,
    ``variables`` must be ``None``), or a linen ``nn.Module`` with its ``variables`` (``model.init(key, x)``; the
    ``"params"`` collection are the parameters, other collections stay fixed).

    ``loss(m, example)`` receives the nnx module rebuilt from the current parameters, or for linen the function
    ``apply(*inputs) = model.apply({**variables, "params": params}, *inputs)``.
    """
    if not callable(loss):
        raise TypeError(f"`loss` must be callable loss(model, example) -> scalar, got {type(loss).__name__}")
    nnx = _require("flax.nnx", "flax")
    linen = _require("flax.linen", "flax")
    if isinstance(model, nnx.Module):
        if variables is not None:
            raise ValueError("`variables` is for linen modules; an nnx module carries its own state (pass None)")
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)

        def rebuild_nnx(p):
            return nnx.merge(graphdef, p, rest)

        rebuild = rebuild_nnx

    elif isinstance(model, linen.Module):
        if not isinstance(variables, dict) or "params" not in variables:
            raise ValueError("a linen module needs its `variables` (model.init(key, x)), a dict with a 'params' entry")
        params = variables["params"]
        fixed = {k: v for k, v in variables.items() if k != "params"}

        def rebuild_linen(p):
            return lambda *inputs: model.apply({**fixed, "params": p}, *inputs)

        rebuild = rebuild_linen

    else:
        raise TypeError(f"`model` must be a flax nnx.Module or linen nn.Module, got {type(model).__name__}")

    def loss_fn(p, example):
        return loss(rebuild(p), example)

    acc = None if accuracy is None else (lambda p, example: accuracy(rebuild(p), example))
    return Problem(loss_fn, data, params, name, acc, test_data)
