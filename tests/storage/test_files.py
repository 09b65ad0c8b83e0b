"""Hashing a file in chunks and moving a staged folder into place, with answers known from hashlib and the disk."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from genreflow.storage.files import hash_file, move_into_place

Digest = str | Callable[[], Any]
DATA = bytes(range(256)) * 5000  # 1.28 MB: more than one chunk of every size used below


@pytest.mark.parametrize("digest", ["sha1", hashlib.sha256, partial(hashlib.blake2b, digest_size=16)],
                         ids=["name", "constructor", "partial"])
def test_a_files_digest_is_hashlibs_of_its_bytes_whatever_the_chunk(tmp_path: Path, digest: Digest) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(DATA)
    reference = hashlib.new(digest) if isinstance(digest, str) else digest()
    reference.update(DATA)
    for chunk in (4096, 1 << 20, 1 << 22):  # 4096 splits the file unevenly; 1 << 22 reads it at once
        assert hash_file(path, digest, chunk).hexdigest() == reference.hexdigest()
    with path.open("rb") as handle:
        assert hash_file(handle, digest).hexdigest() == reference.hexdigest()


def test_a_running_hash_keeps_what_it_had(tmp_path: Path) -> None:
    """model_checksum mixes each file's name into one digest between files."""
    running = hashlib.blake2b(digest_size=16)
    running.update(b"model.keras\0")
    returned = hash_file(io.BytesIO(DATA), running)
    assert returned is running
    assert running.hexdigest() == hashlib.blake2b(b"model.keras\0" + DATA, digest_size=16).hexdigest()


def test_an_open_file_is_hashed_from_where_it_stands() -> None:
    handle = io.BytesIO(b"header" + DATA)
    handle.read(6)
    assert hash_file(handle, "sha1").hexdigest() == hashlib.sha1(DATA).hexdigest()


def test_a_staged_folder_replaces_the_old_one_whole(tmp_path: Path) -> None:
    dest = tmp_path / "weights"
    (dest / "old").mkdir(parents=True)
    (dest / "old" / "stale.bin").write_bytes(b"stale")
    staged = tmp_path / ".staged"
    (staged / "new").mkdir(parents=True)
    (staged / "new" / "model.bin").write_bytes(b"new")
    move_into_place(staged, dest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == ["new", "new/model.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights"]  # nothing staged or set aside is left


def test_a_staged_folder_merges_into_the_old_one(tmp_path: Path) -> None:
    dest = tmp_path / "raw"
    (dest / "fma_metadata").mkdir(parents=True)
    (dest / "fma_metadata" / "kept.csv").write_text("kept")
    (dest / "fma_metadata" / "tracks.csv").write_text("old")
    (dest / "fma_small.zip").write_text("archive")
    staged = tmp_path / "staged"
    (staged / "fma_metadata").mkdir(parents=True)
    (staged / "fma_metadata" / "tracks.csv").write_text("new")
    move_into_place(staged / "fma_metadata", dest / "fma_metadata", merge=True)
    assert (dest / "fma_metadata" / "tracks.csv").read_text() == "new"
    assert (dest / "fma_metadata" / "kept.csv").read_text() == "kept"
    assert (dest / "fma_small.zip").read_text() == "archive"
    assert not (staged / "fma_metadata").exists()


def test_a_staged_file_replaces_a_folder_when_merging(tmp_path: Path) -> None:
    dest = tmp_path / "entry"
    (dest / "inside").mkdir(parents=True)
    staged = tmp_path / "staged"
    staged.write_text("a file now")
    move_into_place(staged, dest, merge=True)
    assert dest.read_text() == "a file now"
