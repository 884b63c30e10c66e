"""Compiled programs in a long process: their count, and the memory mappings XLA:CPU holds for them."""

from __future__ import annotations

import gc

import jax
import jax.random as jr
import pytest

import sde_sam as ss
from sde_sam import _compiles


def test_many_programs_in_one_process_stay_below_the_map_limit(monkeypatch):
    """Past Linux's limit on a process's memory mappings (``vm.max_map_count``), XLA:CPU's next compilation
    segfaults (seen in a test worker after a few hundred tests; reproduced with the limit lowered to 12000). A test
    cannot lower the system's limit, so it lowers the package's view of it: a limit twice this process's mappings
    plus 600. Sixteen runs of distinct lengths compile 16 programs (forty without the release: 6174 more mappings, on
    this package's machine); ``run_discrete`` releases JAX's compiled programs past half the limit, so the process
    stays within 300 mappings (two programs) of that half."""
    if _compiles.map_count() is None or _compiles.map_limit() is None:
        pytest.skip("this system lists no memory mappings (/proc)")
    jax.clear_caches()
    gc.collect()
    base = _compiles.map_count()
    assert base is not None
    limit = 2 * (base + 300)
    monkeypatch.setattr(_compiles, "map_limit", lambda: limit)
    problem, sampler = ss.problems.linear_regression(n=16, d=3), ss.WithReplacement(4)
    most = 0
    for steps in range(1, 17):
        ss.run_discrete(
            problem, ss.variants.sam(0.1), sampler, eta=0.05, steps=steps, num_runs=2, key=jr.key(0), progress=False
        )
        most = max(most, _compiles.map_count() or 0)
    assert most <= limit // 2 + 300, (base, most)


def test_release_clears_only_past_the_fraction(monkeypatch):
    count = _compiles.map_count()
    if count is None:
        pytest.skip("this system lists no memory mappings (/proc)")
    monkeypatch.setattr(_compiles, "map_limit", lambda: 10 * count)
    assert not _compiles.release_programs_near_map_limit()
    monkeypatch.setattr(_compiles, "map_limit", lambda: count)
    assert _compiles.release_programs_near_map_limit()


def test_nested_counts_with_equal_numbers_close_in_any_order():
    """Two nested ``counting`` blocks that have counted the same (here nothing) close cleanly, and the outer one
    keeps counting after the inner one closed (an open count was once found by equality, so the inner block's exit
    closed the outer one and the outer's exit raised ValueError)."""
    with _compiles.counting() as outer:
        with _compiles.counting() as inner:
            pass
        assert inner.count == outer.count == 0
        jax.jit(lambda x: x * 3.0 + 1.0).lower(1.0).compile()
    assert outer.count == 1 and inner.count == 0
