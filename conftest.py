"""Every ``python`` code block of README.md and docs/*.md is a test (sybil), run in a fresh namespace.

A block that only illustrates (minutes of work, or several hosts) is preceded by ``<!-- skip: next -->`` and says
what it costs. Each block must be self-contained: nothing carries over from the block before it.
"""

from __future__ import annotations

from typing import Any

from sybil import Sybil
from sybil.evaluators.python import pad
from sybil.parsers.markdown import CodeBlockParser, SkipParser


def _run_alone(example: Any) -> None:
    """Execute one code block in a namespace of its own (the block must define everything it uses)."""
    source = pad(example.parsed, example.line + example.parsed.line_offset)
    exec(compile(source, example.path, "exec", dont_inherit=True), {"__name__": "__docs__"})


pytest_collect_file = Sybil(
    parsers=[CodeBlockParser(language="python", evaluator=_run_alone), SkipParser()],
    patterns=["README.md", "docs/*.md"],
).pytest()
