"""The house rules of ARCHITECTURE.md, checked from the code: imports one way, short functions."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "fetchcli"
ARCHITECTURE = PACKAGE.parent / "ARCHITECTURE.md"
LAYERS = ["entry", "run", "executors", "work", "output", "people", "base"]  # top to bottom
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every fetchcli module `path` imports, at the top or inside a function (not TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            node.body = []  # imports for type checkers only: no run-time arrow
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("fetchcli"):
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("fetchcli"))
    return found


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path) & modules.keys() - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> list[str] | None:
        if name in visiting:
            return [*visiting[visiting.index(name) :], name]
        if name in done:
            return None
        visiting.append(name)
        for target in sorted(graph[name]):
            if cycle := visit(target):
                return cycle
        visiting.pop()
        done.add(name)
        return None

    for name in sorted(graph):
        if cycle := visit(name):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circles():
    # The package itself (`fetchcli`) only re-exports lazily, for the library's users.
    graph = {name: targets - {"fetchcli"} for name, targets in import_graph().items()}
    assert find_cycle(graph) is None


def layer_of_modules() -> dict[str, str]:
    """Each module's layer, from the table in ARCHITECTURE.md (its first two columns)."""
    layers: dict[str, str] = {}
    for row in ARCHITECTURE.read_text().splitlines():
        cells = row.split("|")
        if len(cells) > 3 and cells[1].strip() in LAYERS:
            for module in re.findall(r"`([\w/]+)\.py`", cells[2]):
                layers["fetchcli." + module.replace("/", ".")] = cells[1].strip()
    return layers


def test_every_module_is_in_the_architecture_table():
    packages = {"fetchcli", "fetchcli.__main__", "fetchcli.parallel"}  # entry points, namespaces
    assert sorted(import_graph().keys() - layer_of_modules().keys() - packages) == []


def test_imports_point_down_the_table():
    layers = layer_of_modules()
    rank = {module: LAYERS.index(layer) for module, layer in layers.items()}
    upward = [
        f"{module} ({layers[module]}) imports {target} ({layers[target]})"
        for module, targets in sorted(import_graph().items())
        if module in rank
        for target in sorted(targets)
        if target in rank and rank[target] < rank[module]
    ]
    assert upward == []


def test_no_function_is_long():
    # Its body, from the first statement: a keyword-only signature of many options (the
    # one list of `Settings.create`) is a table, not code to follow.
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.body[0].lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.name} ({length} lines)")
    assert long == []
