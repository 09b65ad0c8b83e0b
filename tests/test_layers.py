"""The layers point down: storage, then the plain libraries (model), then stages (tasks), then flows.

bench sits beside flows at the top: it measures every layer. An import of a
higher layer from a lower one, at module level or inside a function, fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"storage": 0, "model": 1, "tasks": 2, "flows": 3, "bench": 3}


def imported_layers(path: Path) -> set[tuple[str, int]]:
    """(layer, line) of every genreflow layer that ``path`` imports."""
    found: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "genreflow" and len(parts) > 1 and parts[1] in LAYERS:
                found.add((parts[1], node.lineno))
            elif parts[0] in LAYERS:
                found.add((parts[0], node.lineno))  # a bare top-level name: wrong whatever the layer
    return found


def modules() -> list[Path]:
    return sorted(p for layer in LAYERS for p in (ROOT / layer).rglob("*.py"))


def module_name(path: Path) -> str:
    """genreflow.<layer>.<...> of a source file (a package's __init__ is the package)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(["genreflow", *parts])


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The genreflow modules among ``known`` that ``path`` imports, at module level or inside a function
    (``from package import module`` counts as importing the module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(name for name in (node.module, *(f"{node.module}.{a.name}" for a in node.names))
                         if name in known)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan): each is an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_modules_import_each_other() -> None:
    """No import circle, within a layer or across (issue 20): a circle hides behind lazy imports and ``Any``."""
    paths = {module_name(p): p for p in modules()}
    known = set(paths)
    graph = {name: imported_modules(path, known) - {name} for name, path in paths.items()}
    # A package's __init__ that re-exports its modules is not a circle with them.
    graph = {name: {m for m in targets if not (m.startswith(name + ".") and paths[name].name == "__init__.py")}
             for name, targets in graph.items()}
    assert not import_cycles(graph), f"import circles: {import_cycles(graph)}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path) -> None:
    own = path.relative_to(ROOT).parts[0]
    wrong = sorted(
        f"line {line}: {own}/ imports {layer}/" for layer, line in imported_layers(path)
        if LAYERS[layer] > LAYERS[own] or (layer == "bench" and own != "bench")
    )
    assert not wrong, f"{path.relative_to(ROOT)}: " + "; ".join(wrong)


def test_the_circle_check_sees_a_circle() -> None:
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_bare_top_level_imports_are_caught(tmp_path: Path) -> None:
    """The checker itself: a bare ``import tasks`` and a higher layer inside a function are both seen."""
    sample = tmp_path / "sample.py"
    sample.write_text("import tasks.shard\n\ndef f():\n    from genreflow.flows.config import Config\n")
    assert imported_layers(sample) == {("tasks", 1), ("flows", 4)}
