"""The library stands apart from the studies built on it, and its import graph has no cycles."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import sde_sam

PACKAGE = os.path.dirname(sde_sam.__file__)
STUDIES = ("analysis", "figures", "paper_checks")


def _imports(path: str) -> list[str]:
    """Every module named by an import statement in ``path`` (module level or inside functions), absolute names
    resolved for relative imports."""
    rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
    parts = rel.split(".")
    pkg = parts[:-1] if not rel.endswith("__init__") else parts[:-1]
    out = []
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = pkg[: len(pkg) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out.append(mod)
            out += [f"{mod}.{a.name}" for a in node.names]
    return out


def _sources():
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            if f.endswith(".py"):
                yield os.path.join(root, f)


def test_library_never_imports_the_studies():
    """No import statement anywhere in ``sde_sam`` (lazy ones included) names ``analysis``, ``figures`` or
    ``paper_checks``; importing every ``sde_sam`` module in a fresh interpreter loads none of them."""
    bad = [(os.path.relpath(p, PACKAGE), m) for p in _sources() for m in _imports(p) if m.split(".")[0] in STUDIES]
    assert not bad, bad
    code = ("import pkgutil, sys, sde_sam\n"
            "for m in pkgutil.walk_packages(sde_sam.__path__, 'sde_sam.'):\n"
            "    if not m.name.endswith('__main__'):\n"
            "        __import__(m.name)\n"
            f"print(sorted(k for k in sys.modules if k.split('.')[0] in {STUDIES!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_no_import_cycles_between_library_modules():
    """The module-level and lazy imports between ``sde_sam``'s private modules form no cycle (e.g. the noise and
    curvature estimators used to import each other)."""
    graph: dict[str, set[str]] = {}
    names = {}
    for p in _sources():
        rel = os.path.relpath(p, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
        names[rel.removesuffix(".__init__")] = p
    for mod, p in names.items():
        if mod.rsplit(".", 1)[-1].startswith("_") and not mod.endswith("__init__"):
            graph[mod] = {m for m in _imports(p) if m in names and m != mod and m.rsplit(".", 1)[-1].startswith("_")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in graph.get(m, ()):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)
