"""Fingerprints: a stable hash of what produced an output (inputs + transform + parameters).

As in huggingface/datasets: an output's fingerprint hashes the upstream
fingerprint, the transform's name and its parameters, so a change to any of
them makes the output stale.
"""

from __future__ import annotations

import hashlib
import json
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
