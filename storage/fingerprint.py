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
    function or class defined at the module's top level). The source is parsed
    and dumped without docstrings, so comments, formatting and docstrings may
    change freely while any change to what the code does changes the version:
    no version constant to forget to bump. Modules are found, not imported, so
    a version costs no TensorFlow start-up.
    """
    digest = hashlib.blake2b(digest_size=8)
    for source in sources:
        module, _, name = source.partition(":")
        digest.update(source.encode())
        digest.update(_normalised_ast(module, name).encode())
    return digest.hexdigest()


def _normalised_ast(module: str, name: str) -> str:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ValueError(f"code_version: no Python source for module {module!r}")
    tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
    nodes: list[ast.AST] = [tree]
    if name:
        nodes = [node for node in tree.body if getattr(node, "name", None) == name]
        if not nodes:
            raise ValueError(f"code_version: {module} defines no top-level {name!r}")
    for node in ast.walk(ast.Module(body=nodes, type_ignores=[])):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return "\n".join(ast.dump(node, annotate_fields=False) for node in nodes)
