"""The reproduction keeps JAX's compiled programs under its results folder: a rerun compiles nothing again."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = """
import sys
import jax, jax.numpy as jnp
from analysis.reproduce import compile_counter, enable_compilation_cache
enable_compilation_cache(sys.argv[1])
counts = compile_counter()
jax.jit(lambda x: jnp.sin(x) * 2 + jnp.cos(x) ** 3)(jnp.arange(5.0)).block_until_ready()
print(counts.count - counts.cache_hits, counts.cache_hits)  # compiled, read back
"""


def _run(folder) -> tuple[int, int]:
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    out = subprocess.run(
        [sys.executable, "-c", CODE, str(folder)], capture_output=True, text=True, env=env, timeout=300, check=True
    )
    compiles, hits = out.stdout.split()[-2:]
    return int(compiles), int(hits)


def test_a_second_process_compiles_nothing_the_first_compiled(tmp_path):
    first = _run(tmp_path)
    assert first[0] >= 1 and first[1] == 0  # compiled, and the cache was empty
    assert (tmp_path / "jax_cache").is_dir() and any((tmp_path / "jax_cache").iterdir())
    second = _run(tmp_path)
    assert second == (0, first[0])  # every program read back from the cache, none compiled
