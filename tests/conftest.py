import os
import sys

# Make `tests.helpers` importable as `helpers` from every test module.
sys.path.insert(0, os.path.dirname(__file__))


import gc

import jax
import pytest

# No implicit dtype promotion anywhere in the tests (float32 meeting float64, int32 arrays meeting float32 ones):
# each such mix in the library is a precision bug or a silent upcast, so it must be written out (equinox's test
# configuration).
jax.config.update("jax_numpy_dtype_promotion", "strict")
from helpers import float64  # noqa: E402

from sde_sam._compiles import release_programs_near_map_limit  # noqa: E402


@pytest.fixture(scope="module")
def x64():
    """float64 for a whole test module: ``pytestmark = pytest.mark.usefixtures("x64")``."""
    with float64():
        yield


@pytest.fixture(autouse=True)
def _release_compiled_programs():
    """After each test, JAX's compiled programs are released when this worker holds more than half the memory
    mappings a process may (``sde_sam._compiles.release_programs_near_map_limit``): a worker that runs a few hundred
    tests compiles tens of thousands of kernels, and past Linux's limit the next compilation segfaults."""
    yield
    release_programs_near_map_limit()


@pytest.fixture
def released_programs():
    """Before a test that counts compilations: release every compiled program JAX holds, so the test starts far
    below half the mapping limit and ``run_discrete``/``simulate`` cannot release (and so recompile) in its middle,
    whatever the worker ran before it (the slow pass's workers run long compiling tests)."""
    jax.clear_caches()
    gc.collect()
