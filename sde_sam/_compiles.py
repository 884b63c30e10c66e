"""Counting XLA compilations in this process (``jax.monitoring``): how many programs a call compiled, and how long
that took; releasing compiled programs before the process runs out of memory mappings. Imports nothing of the
package."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading

import jax


@dataclasses.dataclass(eq=False)  # an open count is found by identity: two nested counts may hold equal numbers
class CompileCount:
    """Programs handed to XLA while a :func:`counting` block was open (compiled, or read from the persistent cache:
    ``count - cache_hits`` were compiled), their ``seconds``, and the persistent cache's ``cache_hits``."""

    count: int = 0
    seconds: float = 0.0
    cache_hits: int = 0


_OPEN: list[CompileCount] = []
_LOCK = threading.Lock()


def _on_duration(event: str, duration_secs: float, **kwargs) -> None:
    if event == "/jax/core/compile/backend_compile_duration":
        with _LOCK:
            for c in _OPEN:
                c.count += 1
                c.seconds += duration_secs


def _on_event(event: str, **kwargs) -> None:
    if event == "/jax/compilation_cache/cache_hits":
        with _LOCK:
            for c in _OPEN:
                c.cache_hits += 1


@functools.cache
def _listen() -> None:
    jax.monitoring.register_event_duration_secs_listener(_on_duration)
    jax.monitoring.register_event_listener(_on_event)


@functools.cache
def process_count() -> CompileCount:
    """A count open for the rest of the process (read it before and after a piece of work)."""
    _listen()
    c = CompileCount()
    with _LOCK:
        _OPEN.append(c)
    return c


@contextlib.contextmanager
def counting():
    """``with counting() as c: ...``: ``c`` counts the compilations made inside the block (blocks may nest)."""
    _listen()
    c = CompileCount()
    with _LOCK:
        _OPEN.append(c)
    try:
        yield c
    finally:
        with _LOCK:
            _OPEN.remove(c)


# -- memory mappings -------------------------------------------------------------------------------------------
#: Where Linux states the most memory mappings a process may hold (``vm.max_map_count``), and lists this process's.
_MAP_LIMIT_FILE = "/proc/sys/vm/max_map_count"
_MAPS_FILE = "/proc/self/maps"


def map_limit() -> int | None:
    """The most memory mappings a process may hold (Linux ``vm.max_map_count``); ``None`` where it is not stated."""
    try:
        with open(_MAP_LIMIT_FILE) as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def map_count() -> int | None:
    """This process's memory mappings now; ``None`` where ``/proc`` does not list them."""
    try:
        with open(_MAPS_FILE, "rb") as fh:
            return sum(1 for _ in fh)
    except OSError:
        return None


def release_programs_near_map_limit(fraction: float = 0.5) -> bool:
    """Clear JAX's caches of compiled programs (:func:`jax.clear_caches`) when this process holds more than
    ``fraction`` of the memory mappings it may (:func:`map_limit`); returns whether it did.

    XLA:CPU maps memory for the kernels of every compiled program (tens to hundreds of mappings each) and JAX keeps each
    program for the life of the process, so a process that compiles thousands of programs (a long study, a test
    worker) reaches Linux's limit (65530 by default), and the next compilation crashes the process with a
    segmentation fault inside XLA. Programs still referenced stay; the others are compiled again if called."""
    limit, count = map_limit(), map_count()
    if limit is None or count is None or count <= fraction * limit:
        return False
    jax.clear_caches()
    return True
