"""The package's shape: few long functions, and no import circle among its modules (both read statically)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Optional

PACKAGE = Path(__file__).resolve().parents[1] / "fairseq_kt"
LONG_FUNCTION_LINES = 80
"""A function (docstring, decorators and nested functions included) longer than this counts as long."""
MAX_LONG_FUNCTIONS = 2


def _module_name(path: Path) -> str:
    """``fairseq_kt/bench/step.py`` -> ``fairseq_kt.bench.step``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    """Every module of the package by dotted name, with its file and syntax tree."""
    return {_module_name(path): (path, ast.parse(path.read_text(encoding="utf-8"))) for path in PACKAGE.rglob("*.py")}


def long_functions(limit: int = LONG_FUNCTION_LINES) -> list[str]:
    """``file:line name (N lines)`` of every function or method longer than ``limit`` lines, longest first."""
    found: list[tuple[int, str]] = []
    for path, tree in _modules().values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = node.end_lineno - first + 1
                if lines > limit:
                    where = path.relative_to(PACKAGE.parent)
                    found.append((lines, f"{where}:{node.lineno} {node.name} ({lines} lines)"))
    return [text for _, text in sorted(found, reverse=True)]


def _module_level_statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements run when the module is imported: the body, with ``if``/``try``/``with`` blocks opened.

    ``if TYPE_CHECKING:`` blocks count too: a circle that only type checkers follow is still a circle between the
    modules' designs. Function and class bodies do not count (imports there run later, on a call).
    """
    out: list[ast.stmt] = []
    for stmt in body:
        out.append(stmt)
        if isinstance(stmt, ast.If):
            out += _module_level_statements(stmt.body + stmt.orelse)
        elif isinstance(stmt, ast.Try):
            handlers = [s for h in stmt.handlers for s in h.body]
            out += _module_level_statements(stmt.body + handlers + stmt.orelse + stmt.finalbody)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            out += _module_level_statements(stmt.body)
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module name of a ``from X import ...`` (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def module_imports(name: str, tree: ast.Module, known: set[str], is_package: bool = False) -> set[str]:
    """The modules of ``known`` that module ``name`` imports at module level.

    ``from P import m`` counts as importing the module ``P.m`` where there is one, else (a name defined in ``P``)
    as importing ``P``. The parent packages Python runs first are not counted: a package's ``__init__`` that imports
    its own submodules would otherwise close a circle with each of them.
    """
    found: set[str] = set()
    for stmt in _module_level_statements(tree.body):
        if isinstance(stmt, ast.Import):
            found |= {alias.name for alias in stmt.names}
        elif isinstance(stmt, ast.ImportFrom):
            source = _resolve(name, is_package, stmt)
            found |= {f"{source}.{a.name}" if f"{source}.{a.name}" in known else source for a in stmt.names}
    return {target for target in found if target in known and target != name}


def import_graph() -> dict[str, set[str]]:
    """Every module of the package -> the package's modules it imports at module level."""
    modules = _modules()
    known = set(modules)
    return {
        name: module_imports(name, tree, known, is_package=path.name == "__init__.py")
        for name, (path, tree) in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """One import circle as ``[a, b, ..., a]``, or None (depth-first search, modules in sorted order)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_few_long_functions():
    found = long_functions()
    assert len(found) <= MAX_LONG_FUNCTIONS, (
        f"{len(found)} functions over {LONG_FUNCTION_LINES} lines (at most {MAX_LONG_FUNCTIONS}): " + "; ".join(found)
    )


def test_no_import_circle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_the_checks_see_what_they_should():
    """The walkers themselves: imports under ``if TYPE_CHECKING``, relative ones, a known circle, a long function."""
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import b\n"
        "from pkg.c import thing\n"
        "if TYPE_CHECKING:\n"
        "    from pkg.d import Other\n"
        "def later():\n"
        "    import pkg.a\n"
    )
    assert module_imports("pkg.a", ast.parse(source), known) == {"pkg.b", "pkg.c", "pkg.d"}
    assert module_imports("pkg.b", ast.parse("from pkg import CONSTANT\n"), known) == {"pkg"}
    assert "fairseq_kt.bench.common" in import_graph()["fairseq_kt.bench.workspace"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert long_functions(limit=40), "some function is over 40 lines"
