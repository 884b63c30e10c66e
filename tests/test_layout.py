"""The library stands apart from the studies built on it, and its import graph has no cycles."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import sde_sam

PACKAGE = os.path.dirname(sde_sam.__file__)
STUDIES = ("analysis", "figures", "paper_checks", "stage_types")


def _imports(path: str) -> list[str]:
    """Every module named by an import statement in ``path`` (module level or inside functions), absolute names
    resolved for relative imports."""
    rel = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
    parts = rel.split(".")
    pkg = parts[:-1]
    out = []
    for node in ast.walk(ast.parse(Path(path).read_text())):
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
    code = (
        "import pkgutil, sys, sde_sam\n"
        "for m in pkgutil.walk_packages(sde_sam.__path__, 'sde_sam.'):\n"
        "    if not m.name.endswith('__main__'):\n"
        "        __import__(m.name)\n"
        f"print(sorted(k for k in sys.modules if k.split('.')[0] in {STUDIES!r}))"
    )
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
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(n) :], n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)


def _room(mod: str) -> str | None:
    """The piece of the library a module belongs to: its private package (``sde_sam._sde``) or, for a private
    top-level module, the module itself (``sde_sam._io``); ``None`` for the public faces and other packages."""
    parts = mod.split(".")
    if parts[0] != "sde_sam" or len(parts) < 2 or not parts[1].startswith("_") or parts[1].startswith("__"):
        return None
    return "sde_sam." + parts[1]


def test_private_pieces_import_one_way():
    """Between the library's private pieces (its ``_`` packages and ``_`` modules, lazy imports included) imports
    point one way: no two pieces import each other, directly or round a loop (``_sde`` and ``_training`` used to,
    through SVAG and the validators; ``_blocks`` and ``_training`` through cost counting)."""
    graph: dict[str, set[str]] = {}
    for p in _sources():
        rel = os.path.relpath(p, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
        src = _room(rel)
        if src is not None:
            graph.setdefault(src, set()).update(r for m in _imports(p) if (r := _room(m)) not in (None, src))
    order: list[str] = []  # rooms in an order where each imports only rooms before it, or a loop is named
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                raise AssertionError("pieces that import each other: " + " -> ".join([*stack[stack.index(n) :], n]))
            if n not in state:
                visit(n, [*stack, n])
        state[m] = 2
        order.append(m)

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert len(order) == len(graph) >= 10, order


#: The stages' config and data types: what the studies, the figures and the checks share, below all three.
CONTRACT = "stage_types"


def test_figures_and_checks_never_import_a_study():
    """A figure or a paper check reads a stage's result, typed by :data:`CONTRACT`; it never imports a study
    (``analysis``), which stands above them."""
    root = os.path.dirname(PACKAGE)
    bad = []
    for folder in ("figures", "paper_checks"):
        for f in sorted(os.listdir(os.path.join(root, folder))):
            if f.endswith(".py"):
                tree = ast.parse(Path(root, folder, f).read_text())
                for node in ast.walk(tree):
                    names = (
                        [a.name for a in node.names]
                        if isinstance(node, ast.Import)
                        else [node.module or ""]
                        if isinstance(node, ast.ImportFrom) and not node.level
                        else []
                    )
                    bad += [(folder, f, n) for n in names if n.split(".")[0] == "analysis"]
    assert not bad, bad


def test_the_stage_types_import_nothing_of_the_studies_or_of_jax():
    """The contract stands below the figures and checks: no import of ``analysis``, ``figures``, ``paper_checks``,
    ``sde_sam`` or ``jax`` (lazy ones included)."""
    root = os.path.dirname(PACKAGE)
    tree = ast.parse(Path(root, CONTRACT, "__init__.py").read_text())
    names = [
        n
        for node in ast.walk(tree)
        for n in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    ]
    assert names and not [n for n in names if n.split(".")[0] in (*STUDIES, "sde_sam", "jax")], names


def test_each_public_object_has_one_public_name():
    """``sde_sam`` and its public namespaces name each function and class once (no ``ss.sde.simulate`` beside
    ``ss.simulate``), and hold no test hook (the Euler-Maruyama step, its keys, the symbolic checker's twin problem:
    those live in the private modules the tests import)."""
    import importlib
    import types

    names: dict[int, list[str]] = {}
    public: set[str] = set()
    for mod in (
        "",
        ".variants",
        ".sde",
        ".noise",
        ".curvature",
        ".problems",
        ".symbolic",
        ".train",
        ".parallel",
        ".quantities",
        ".validation",
    ):
        module = importlib.import_module("sde_sam" + mod)
        for n in dir(module):
            obj = getattr(module, n)
            if n.startswith("_") or isinstance(obj, types.ModuleType):
                continue
            public.add(f"sde_sam{mod}.{n}")
            if callable(obj):
                names.setdefault(id(obj), []).append(f"sde_sam{mod}.{n}")
    twice = sorted(v for v in names.values() if len(v) > 1)
    assert not twice, twice
    hooks = (
        "em_step",
        "step_keys",
        "standard_normal_weights",
        "twin_problem",
        "random_instance",
        "numeric_fn",
        "rel_err",
        "NORM_EPS",
        "safe_normalize",
        "run_keys",
        "build_schedule",
    )
    assert not [h for h in hooks if any(p.endswith("." + h) for p in public)]
