"""Run a batched function over a 1-D device mesh whose devices may belong to several processes.

:func:`run_blocked` evaluates ``fn(*args)``, where ``args[keys_index]`` is a 1-D array of PRNG keys and every
output leaf has a leading axis over those keys, with the keys split over the mesh (``shard_map``) and, on
each device, advanced ``block`` at a time (``lax.map`` over ``vmap`` blocks). Key ``i`` always meets the
same arithmetic (a block of ``block`` keys), so each output row is a function of its key and ``block``
only: the same bits on any number of devices or processes.

Everything here works for a mesh spanning several processes (``jax.distributed``): inputs are built as
global arrays from host data every process holds (:func:`global_array`), and outputs are brought back
replicated (a jitted identity, or a jitted reduction, with replicated ``out_shardings``) before they are
read on the host.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as PS


def check_mesh(mesh: Any, name: str = "mesh") -> str:
    """The axis name of a 1-D :class:`jax.sharding.Mesh`; ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
        raise ValueError(f"`{name}` must be a 1-D jax.sharding.Mesh (one axis for the paths/runs), got {mesh!r}")
    return mesh.axis_names[0]


def global_array(mesh: Mesh, host: Any, spec: PS | None = None) -> jax.Array:
    """A global array on ``mesh`` laid out by ``spec``, built from ``host`` (the same on every process)."""
    host = np.asarray(host)
    spec = PS() if spec is None else spec
    return jax.make_array_from_callback(host.shape, NamedSharding(mesh, spec), lambda idx: host[idx])


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Every array leaf of ``tree`` as a global array replicated on ``mesh``."""
    return jax.tree_util.tree_map(lambda a: global_array(mesh, a), tree)


@functools.lru_cache(maxsize=16)
def _replicator(mesh: Mesh):
    return jax.jit(lambda t: t, out_shardings=NamedSharding(mesh, PS()))


def to_host(mesh: Mesh | None, tree: Any) -> Any:
    """``tree`` as numpy arrays on every process (all-gathered first when ``mesh`` is given)."""
    if mesh is not None:
        tree = _replicator(mesh)(tree)
    return jax.tree_util.tree_map(np.asarray, tree)


def _is_array(leaf) -> bool:
    return isinstance(leaf, (jax.Array, np.ndarray, np.generic))


def _split_args(args: tuple, keys_index: int):
    rest = list(args)
    rest[keys_index] = None
    leaves, treedef = jax.tree_util.tree_flatten(rest)
    mask = tuple(_is_array(leaf) for leaf in leaves)
    dynamic = [leaf for leaf, m in zip(leaves, mask, strict=True) if m]
    static = tuple(None if m else leaf for leaf, m in zip(leaves, mask, strict=True))
    return dynamic, (treedef, mask, static)


def _merge(dynamic, spec):
    treedef, mask, static = spec
    it = iter(dynamic)
    return treedef.unflatten([next(it) if m else s for m, s in zip(mask, static, strict=True)])


def _build(fn, spec, keys_index, impl, block, mesh, reduce):
    def call(dynamic, key_data):
        args = _merge(dynamic, spec)
        args[keys_index] = jr.wrap_key_data(key_data, impl=impl)
        return fn(*args)

    def body(dynamic, key_data):
        m = key_data.shape[0]
        if m == block:
            return call(dynamic, key_data)
        out = jax.lax.map(lambda kd: call(dynamic, kd), key_data.reshape(m // block, block, *key_data.shape[1:]))
        return jax.tree_util.tree_map(lambda a: a.reshape(m, *a.shape[2:]), out)

    if mesh is not None:
        axis = check_mesh(mesh)
        body = jax.shard_map(body, mesh=mesh, in_specs=(PS(), PS(axis)), out_specs=PS(axis), check_vma=False)
    if reduce is None:
        return jax.jit(body)
    out_shardings = None if mesh is None else NamedSharding(mesh, PS())
    return jax.jit(
        lambda dynamic, key_data, *extra: reduce(body(dynamic, key_data), *extra), out_shardings=out_shardings
    )


_build_cached = functools.lru_cache(maxsize=64)(_build)


def run_blocked(
    fn: Callable,
    args: tuple,
    keys_index: int,
    *,
    mesh: Mesh | None = None,
    block: int | None = None,
    reduce: Callable | None = None,
    reduce_args: tuple = (),
) -> Any:
    """``fn(*args)`` over the keys ``args[keys_index]``, split over ``mesh`` and run ``block`` keys at a time.

    The keys are padded (with copies of the first key) to a multiple of ``devices * block``; padded rows
    are dropped from the result. Array leaves of the other arguments are passed replicated; other leaves
    are static (closed over; they must be hashable for the compiled function to be reused).

    Without ``reduce``: the outputs (leading axis = keys), as numpy arrays on every process. With
    ``reduce(outputs, *reduce_args)``: that function is applied to the padded, sharded outputs inside the
    same jit and its (replicated) result is returned as numpy arrays - the reduction runs as collectives.
    """
    keys = args[keys_index]
    n = int(keys.shape[0])
    devices = 1 if mesh is None else mesh.size
    per_device = -(-n // devices)
    block = per_device if block is None else int(block)
    per_device = -(-per_device // block) * block
    total = per_device * devices
    impl = jr.key_impl(keys)
    key_data = np.asarray(jr.key_data(keys))
    if total > n:
        key_data = np.concatenate([key_data, np.repeat(key_data[:1], total - n, axis=0)])
    dynamic, spec = _split_args(tuple(args), keys_index)
    try:
        compiled = _build_cached(fn, spec, keys_index, impl, block, mesh, reduce)
    except TypeError:  # an unhashable static argument: build without caching
        compiled = _build(fn, spec, keys_index, impl, block, mesh, reduce)
    if mesh is None:
        key_arg = jnp.asarray(key_data)
    else:
        axis = check_mesh(mesh)
        dynamic = replicate(mesh, dynamic)
        key_arg = global_array(mesh, key_data, PS(axis))
        reduce_args = tuple(replicate(mesh, a) for a in reduce_args)
    out = compiled(dynamic, key_arg, *reduce_args)
    if reduce is not None:
        return to_host(None, out)
    out = to_host(mesh, out)
    return jax.tree_util.tree_map(lambda a: a[:n], out)
