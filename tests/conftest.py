import os
import sys

# Make `tests.helpers` importable as `helpers` from every test module.
sys.path.insert(0, os.path.dirname(__file__))


import pytest  # noqa: E402
from helpers import float64  # noqa: E402


@pytest.fixture(scope="module")
def x64():
    """float64 for a whole test module: ``pytestmark = pytest.mark.usefixtures("x64")``."""
    with float64():
        yield
