"""The design is in the repository: every "DESIGN §x" citation names a section of docs/design.md."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CITATION = re.compile(r"DESIGN §(\d+(?:\.\d+)?)")
HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)[. ]", re.M)
TREES = ("sde_sam", "analysis", "figures", "paper_checks", "benchmarks", "tests", "docs")


def _sources():
    for tree in TREES:
        for path in sorted((ROOT / tree).rglob("*")):
            if path.suffix in (".py", ".md") and path.is_file():
                yield path
    yield ROOT / "README.md"


def test_every_design_citation_names_a_section_of_the_design_page():
    sections = set(HEADING.findall((ROOT / "docs" / "design.md").read_text()))
    assert {"1", "2", "2.1", "3.1", "3.5", "6.1", "6.5", "9"} <= sections, sorted(sections)  # the page is parsed
    cited, missing = 0, []
    for path in _sources():
        for number in CITATION.findall(path.read_text(encoding="utf-8")):
            cited += 1
            if number not in sections:
                missing.append(f"{path.relative_to(ROOT)}: DESIGN §{number}")
    assert cited > 100 and not missing, missing


def test_no_citation_points_outside_the_repository():
    """The RW-SAM reference is docs/rw-sam.md; no docstring names a file that a clone does not have."""
    assert (ROOT / "docs" / "rw-sam.md").is_file()
    old = "reference/" + "RW-SAM.md"  # split, so that this file does not name it
    stale = [str(p.relative_to(ROOT)) for p in _sources() if old in p.read_text(encoding="utf-8")]
    assert stale == [], stale
