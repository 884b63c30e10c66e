"""docs/does-an-sde-describe-my-training.md runs as written, and prints the output the page shows.

Its two blocks build on each other, so they are fenced ``py`` (the doc runner of conftest.py takes ``python`` blocks
one at a time, each alone) and run here in order."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "does-an-sde-describe-my-training.md"


def _block(text: str, name: str) -> str:
    found = re.search(rf"<!-- {name} -->\n```(?:py)?\n(.*?)```", text, re.S)
    assert found, f"no block <!-- {name} --> in {PAGE.name}"
    return found.group(1)


@pytest.mark.slow  # long: runs in the slow pass (default suite kept under 10 min on 2 cores)
def test_the_page_runs_and_prints_what_it_shows(tmp_path, monkeypatch):
    pytest.importorskip("flax.nnx")
    monkeypatch.chdir(tmp_path)  # anything a block writes lands in a temporary folder
    text = PAGE.read_text()
    namespace: dict = {}
    for name in ("validate", "validity-map"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(_block(text, name), f"{PAGE.name}:{name}", "exec"), namespace)
        assert out.getvalue() == _block(text, f"{name}-output"), name
