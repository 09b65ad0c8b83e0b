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


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path: Path) -> None:
    own = path.relative_to(ROOT).parts[0]
    wrong = sorted(
        f"line {line}: {own}/ imports {layer}/" for layer, line in imported_layers(path)
        if LAYERS[layer] > LAYERS[own] or (layer == "bench" and own != "bench")
    )
    assert not wrong, f"{path.relative_to(ROOT)}: " + "; ".join(wrong)


def test_bare_top_level_imports_are_caught(tmp_path: Path) -> None:
    """The checker itself: a bare ``import tasks`` and a higher layer inside a function are both seen."""
    sample = tmp_path / "sample.py"
    sample.write_text("import tasks.shard\n\ndef f():\n    from genreflow.flows.config import Config\n")
    assert imported_layers(sample) == {("tasks", 1), ("flows", 4)}
