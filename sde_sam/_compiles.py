"""Counting XLA compilations in this process (``jax.monitoring``): how many programs a call compiled, and how long
that took. Imports nothing of the package."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading

import jax


@dataclasses.dataclass
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
