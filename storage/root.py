"""The data root: every path, read and write of genreflow goes through here.

A data root is a local path or an fsspec URL (``s3://bucket/prefix``). Writes
go to a temporary name and are renamed into place, and each stage output gets a
manifest written last, so a crash at any moment leaves either a complete,
verified output or none that a rerun will trust.

Where each stage's outputs go is decided in one place, storage/outputs.py
(LAYOUT); this module knows only how to read and write a path safely.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from genreflow.storage.errors import GenreflowError, naming_path
from genreflow.storage.files import hash_file

# The splits of tracks.parquet, in report order, and the columns of every quarantine table.
SPLITS: tuple[str, ...] = ("train", "val", "test")
QUARANTINE_COLUMNS: tuple[str, ...] = ("track_id", "path", "genre", "reason")


class StorageError(GenreflowError, RuntimeError):
    """A data-root problem, with the path it concerns."""


class UnsafeFileError(StorageError, ValueError):
    """A file that would need unpickling (Python objects) to load: refused, never loaded."""


@dataclass
class DataRoot:
    """A data root on any fsspec filesystem."""

    url: str
    fs: fsspec.AbstractFileSystem = field(init=False, repr=False)
    path: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = str(self.url)
        self.fs, self.path = fsspec.core.url_to_fs(self.url)
        if self.is_local:
            # The url too is absolute: tasks on Dask workers get ``root.url``, and a relative path
            # would resolve against each worker's own working folder, not the flow's.
            self.path = os.path.abspath(self.path)
            self.url = self.path

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    # ---- paths -------------------------------------------------------------
    def join(self, *parts: str) -> str:
        return posixpath.join(self.path, *parts)

    def sibling(self, path: str, name: str) -> str:
        """The path of ``name`` in the folder that holds ``path``."""
        return f"{path.rsplit('/', 1)[0]}/{name}" if "/" in path else name

    def quarantine_path(self) -> str:
        return self.join("quarantine.parquet")

    def local_path(self, path: str) -> str:
        """A path that numpy/Keras can open directly; only local roots have one."""
        if not self.is_local:
            raise StorageError(f"{path} is on {self.url}, not a local filesystem")
        return path

    # ---- checks ------------------------------------------------------------
    def ensure_writable(self) -> None:
        """Fail early, with the path, if the data root cannot be written."""
        probe = self.join(f".write-probe-{uuid.uuid4().hex}")
        try:
            self.fs.makedirs(self.path, exist_ok=True)
            with self.fs.open(probe, "wb") as handle:
                handle.write(b"ok")
            self.fs.rm(probe)
        except (OSError, PermissionError) as exc:
            raise StorageError(f"data root {self.url} is not writable: {exc}") from exc

    def exists(self, path: str) -> bool:
        return self.fs.exists(path)

    def size(self, path: str) -> int:
        return int(self.fs.size(path))

    def mtime_ns(self, path: str) -> int | None:
        """A local file's modification time in ns; None on other filesystems (their mtimes vary in kind)."""
        return os.stat(path).st_mtime_ns if self.is_local else None

    def listdir(self, stage: str) -> list[str]:
        directory = self.join(stage)
        if not self.fs.exists(directory):
            return []
        return sorted(posixpath.basename(p.rstrip("/")) for p in self.fs.ls(directory, detail=False))

    def remove(self, path: str, recursive: bool = False) -> None:
        if self.fs.exists(path):
            self.fs.rm(path, recursive=recursive)

    # ---- atomic writes -----------------------------------------------------
    @contextmanager
    def atomic_open(self, path: str) -> Iterator[IO[bytes]]:
        """Open ``path`` for writing; it appears only if the block succeeds.

        A failed write (a full disk among them: its OSError then names ``path``) leaves no temporary file.
        """
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with naming_path(path):
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
            try:
                with self.fs.open(tmp, "wb") as handle:
                    yield handle
                    if self.is_local:
                        handle.flush()
                        os.fsync(handle.fileno())
                self.fs.mv(tmp, path)
            except BaseException:
                if self.fs.exists(tmp):
                    self.fs.rm(tmp)
                raise

    def write_bytes(self, path: str, data: bytes) -> None:
        with self.atomic_open(path) as handle:
            handle.write(data)

    def write_json(self, path: str, payload: Any) -> None:
        self.write_bytes(path, json.dumps(payload, indent=2, sort_keys=True).encode())

    def write_npy(self, path: str, array: np.ndarray) -> None:
        with self.atomic_open(path) as handle:
            np.save(handle, array, allow_pickle=False)

    def write_parquet(self, path: str, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        with self.atomic_open(path) as handle:
            pq.write_table(table, handle)

    # ---- reads -------------------------------------------------------------
    def read_bytes(self, path: str) -> bytes:
        with self.fs.open(path, "rb") as handle:
            return handle.read()

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_bytes(path))

    def read_parquet(self, path: str) -> pd.DataFrame:
        with self.fs.open(path, "rb") as handle:
            return pq.read_table(handle).to_pandas()

    def read_npy(self, path: str, mmap: bool = True) -> np.ndarray:
        """Load an array without pickle; memory-mapped when the root is local.

        An array of Python objects raises UnsafeFileError: loading it would unpickle
        whatever the file holds, and no genreflow output is ever such an array.
        """
        try:
            if self.is_local and mmap:
                return np.load(path, mmap_mode="r", allow_pickle=False)
            return np.load(io.BytesIO(self.read_bytes(path)), allow_pickle=False)
        except ValueError as exc:
            if "pickle" in str(exc) or "Python objects" in str(exc):
                raise UnsafeFileError(f"{path} holds Python objects (pickled data): refused, not loaded; "
                                      "delete it and rerun `genreflow rebuild` to rebuild it") from None
            raise

    def checksum(self, path: str) -> str:
        """blake2b of a file's bytes, streamed."""
        with self.fs.open(path, "rb") as handle:
            return hash_file(handle, hashlib.blake2b(digest_size=16)).hexdigest()
