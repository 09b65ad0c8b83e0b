"""Fingerprints: a stable hash of what produced an output (inputs + transform + parameters).

As in huggingface/datasets: an output's fingerprint hashes the upstream
fingerprint, the transform's name and its parameters, so a change to any of
them makes the output stale.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _canonical(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return _canonical(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return _canonical(value.item())
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def fingerprint(*parts: Any) -> str:
    """Hex digest of JSON-canonical ``parts`` (dicts sorted by key, models dumped)."""
    payload = json.dumps([_canonical(p) for p in parts], sort_keys=True, default=str)
    return hashlib.blake2b(payload.encode(), digest_size=16).hexdigest()


def frame_fingerprint(frame: pd.DataFrame) -> str:
    """Fingerprint of a table's content, independent of its index."""
    hashed = pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False)
    digest = hashlib.blake2b(hashed.to_numpy().tobytes(), digest_size=16)
    digest.update(",".join(map(str, frame.columns)).encode())
    return digest.hexdigest()


def code_version(*sources: str) -> str:
    """A hash of the code that makes an output: whole modules or single functions, read from source.

    ``sources`` are ``"package.module"`` or ``"package.module:function"`` (a
    function or class defined at the module's top level). The version hashes
    what the code does, not where it lives: each listed top-level statement is
    parsed and dumped without docstrings, the set of them is sorted, and neither
    module names nor imports of genreflow's own or the listed modules (whose code
    is hashed in its own right) enter it. So comments, formatting, docstrings,
    the order of definitions and moving a definition from one listed module to
    another change nothing, while any change to what the code does changes the
    version: no version constant to forget to bump. Modules are found, not
    imported, so a version costs no TensorFlow start-up.
    """
    own = {"genreflow", *(source.partition(":")[0] for source in sources)}
    statements: set[str] = set()
    for source in sources:
        module, _, name = source.partition(":")
        statements.update(_normalised_statements(module, name, own))
    digest = hashlib.blake2b(digest_size=8)
    for statement in sorted(statements):
        digest.update(statement.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _normalised_statements(module: str, name: str, own: set[str]) -> list[str]:
    """The dumps of ``module``'s top-level statements (or of its definition ``name``), without docstrings and
    without imports of ``own`` code."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ValueError(f"code_version: no Python source for module {module!r}")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    nodes = [node for node in tree.body if not _is_docstring(node)]
    if name:
        nodes = [node for node in tree.body if getattr(node, "name", None) == name]
        if not nodes:
            raise ValueError(f"code_version: {module} defines no top-level {name!r}")
    tree = _WithoutOwnImports(own).visit(ast.Module(body=nodes, type_ignores=[]))
    return [ast.dump(node, annotate_fields=False) for node in tree.body]


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


class _WithoutOwnImports(ast.NodeTransformer):
    """Drops docstrings and imports of ``own`` modules at any depth: where that code lives is not what it does."""

    def __init__(self, own: set[str]) -> None:
        self.own = own

    def _is_own(self, module: str) -> bool:
        return module.split(".")[0] in self.own or module in self.own

    def visit_Import(self, node: ast.Import) -> ast.AST | None:
        return None if all(self._is_own(alias.name) for alias in node.names) else node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST | None:
        return None if node.level > 0 or self._is_own(node.module or "") else node

    def generic_visit(self, node: ast.AST) -> ast.AST:
        super().generic_visit(node)
        for field in ("body", "orelse", "finalbody"):
            body = getattr(node, field, None)
            if not isinstance(body, list) or isinstance(node, ast.Module):
                continue
            if field == "body" and isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                    and body and _is_docstring(body[0]):
                body = body[1:]
            if field == "body" and not body:
                body = [ast.Pass()]
            setattr(node, field, body)
        return node
