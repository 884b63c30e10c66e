"""``computed_once`` (variants/_once.py): the values of ``fn(words)`` bit for bit, under jit and (nested) vmap,
computed inside one conditional on CPU (the mechanism that keeps XLA from re-deriving them in each consumer); and
the Rademacher probe built on it, against an independent unpacking of the same random words."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import sde_sam as ss
from sde_sam._variants._once import computed_once
from sde_sam._variants._variant import rademacher_like


def _unpack(words):
    bits = (words[..., :, None] >> jnp.arange(32, dtype=jnp.uint32)) & 1
    flat = (2.0 * bits.astype(jnp.float32) - 1.0).reshape(*words.shape[:-1], -1)
    return flat[..., :40], flat[..., 40:].reshape(*words.shape[:-1], 2, 12)


def _equal(a, b):
    pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    return all(np.array_equal(x, y) for x, y in pairs)


def _words(shape):
    return jr.bits(jr.key(0), shape, dtype=jnp.uint32)


@pytest.mark.parametrize("transform", ["eager", "jit", "vmap", "vmap of vmap"])
def test_values_are_those_of_fn(transform):
    once = lambda w: computed_once(_unpack, w)  # noqa: E731
    if transform == "eager":
        words, got = _words((2,)), once(_words((2,)))
    elif transform == "jit":
        words, got = _words((2,)), jax.jit(once)(_words((2,)))
    elif transform == "vmap":
        words = _words((5, 2))
        got = jax.jit(jax.vmap(once))(words)
    else:
        words = _words((3, 4, 2))
        got = jax.jit(jax.vmap(jax.vmap(once)))(words)
    assert _equal(got, _unpack(words))


def test_a_word_equal_to_the_predicate_constant_gives_the_same_values():
    """The predicate's constant as the first word takes the other branch: same function, same values."""
    from sde_sam._variants._once import _ANY_WORD

    words = jnp.array([_ANY_WORD, 12345], dtype=jnp.uint32)
    assert _equal(jax.jit(lambda w: computed_once(_unpack, w))(words), _unpack(words))


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_cpu_program_computes_fn_inside_one_conditional(depth):
    """The mechanism itself: a conditional survives in the compiled CPU program, also under (nested) vmap, where
    a plain ``lax.cond`` on a batched predicate would become a ``select`` and XLA would fuse the unpacking into
    its consumers again."""

    def nest(f):
        for _ in range(depth):
            f = jax.vmap(f)
        return f

    words = _words((3, 4, 2)[2 - depth :])
    hlo = jax.jit(nest(lambda w: computed_once(_unpack, w))).lower(words).compile().as_text()
    if jax.default_backend() == "cpu":
        assert "conditional(" in hlo  # pyright: ignore[reportOperatorIssue]
    plain = jax.jit(nest(_unpack)).lower(words).compile().as_text()
    assert "conditional(" not in plain  # the check can fail: the plain unpacking has none  # pyright: ignore[reportOperatorIssue]


def test_no_words_gives_fn_of_no_words():
    got = jax.jit(lambda w: computed_once(lambda x: x.astype(jnp.float32) + 1.0, w))(jnp.zeros(0, jnp.uint32))
    assert got.shape == (0,)


def test_refuses_words_that_are_not_uint32():
    # the message names the argument (under the test suite's jaxtyping hook, its type check does)
    with pytest.raises(TypeError, match="words"):
        computed_once(_unpack, jnp.zeros(2, jnp.int32))


def test_rademacher_probe_is_bit_t_of_the_word_stream_in_leaf_order():
    """Independent of the package: numpy unpacks ``jr.bits(key, (ceil(d/32),))``; coordinate ``t`` of the leaves
    flattened in order is ``+1`` where bit ``t % 32`` of word ``t // 32`` is set, else ``-1``."""
    params = ss.problems.digits_mlp().init_params
    leaves = jax.tree_util.tree_leaves(params)
    d = sum(a.size for a in leaves)
    key = jr.key(11)
    words = np.asarray(jr.bits(key, (-(-d // 32),), dtype=jnp.uint32))
    t = np.arange(d)
    expected = np.where((words[t // 32] >> (t % 32)) & 1, 1.0, -1.0)
    for got in (rademacher_like(key, params), jax.jit(rademacher_like)(key, params)):
        np.testing.assert_array_equal(np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(got)]), expected)
    batched = jax.jit(jax.vmap(rademacher_like, (0, None)))(jr.split(key, 3), params)
    for r, k in enumerate(jr.split(key, 3)):
        one = rademacher_like(k, params)
        assert _equal(jax.tree_util.tree_map(lambda a, r=r: a[r], batched), one)


def _shift(words, x):
    a, b = _unpack(words)
    return x[0] + 0.25 * a, x[1] + 0.25 * b


@pytest.mark.parametrize("batched", ["neither", "words", "operands", "both"])
def test_operands_enter_the_conditional_with_their_values(batched):
    """``fn(words, *operands)`` bit for bit, inside one conditional on CPU, whichever of ``words`` and the operands
    is batched (the probe's words are batched over probes while the parameters they shift are not)."""
    words = _words((5, 2)) if batched in ("words", "both") else _words((2,))
    lead = (5,) if batched in ("operands", "both") else ()
    x = (jr.normal(jr.key(1), (*lead, 40)), jr.normal(jr.key(2), (*lead, 2, 12)))
    axes = (0 if words.ndim == 2 else None, 0 if lead else None)
    once, plain = (lambda w, x: computed_once(_shift, w, x)), _shift
    if batched != "neither":
        once, plain = jax.vmap(once, in_axes=axes), jax.vmap(plain, in_axes=axes)
    assert _equal(jax.jit(once)(words, x), plain(words, x))
    if jax.default_backend() == "cpu":
        assert "conditional(" in jax.jit(once).lower(words, x).compile().as_text()  # pyright: ignore[reportOperatorIssue]


def test_rademacher_shifted_is_params_plus_delta_z_bit_for_bit():
    """The probe's shifted parameters equal ``params + delta * rademacher_like(key, params)`` exactly, under jit
    and under vmap over keys (several probes), so RW-SAM's trajectories do not depend on which is formed."""
    from sde_sam._variants._rules import rademacher_shifted

    params = ss.problems.digits_mlp().init_params
    key, delta = jr.key(5), 1e-3

    def reference(k):
        return jax.tree_util.tree_map(lambda a, z: a + delta * z, params, rademacher_like(k, params))

    assert _equal(jax.jit(lambda k: rademacher_shifted(k, params, delta))(key), jax.jit(reference)(key))
    keys = jr.split(key, 3)
    got = jax.jit(jax.vmap(lambda k: rademacher_shifted(k, params, delta)))(keys)
    assert _equal(got, jax.jit(jax.vmap(reference))(keys))
    assert not _equal(got, jax.vmap(lambda k: params)(keys))  # the check can fail: the shift moves every leaf
