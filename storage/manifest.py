"""Manifests: the proof that an output is complete and what it was made from.

A manifest is written after its files, atomically, and lists each file's size
and checksum plus the fingerprint of the inputs and parameters. An output is
*done* only when its manifest exists, its fingerprint matches and every file
still has its recorded size and checksum; anything else is recomputed.

A manifest also records the versions of the libraries whose numerics made the
output (``libraries``), beside the fingerprint rather than in it: an output
whose recorded version of a library differs from the installed one is stale,
and one that records none of a library (written by an earlier genreflow) is
taken as made with the installed version, so upgrading genreflow redoes nothing.
"""

from __future__ import annotations

import datetime as dt
import posixpath
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from genreflow.storage.root import DataRoot

State = Literal["done", "stale", "missing", "corrupt"]


class FileEntry(BaseModel):
    size: int
    checksum: str
    # Local files: the modification time it was sealed with. A file whose size and mtime still agree is
    # trusted without being read again (as make and rsync do): any write changes the mtime, and re-hashing
    # every output on every rerun cost more than the work a rerun skips. None: always checksummed.
    mtime_ns: int | None = None


class Manifest(BaseModel):
    """What an output holds and what made it."""

    name: str
    fingerprint: str
    code: str = ""  # the version of the code that made it, also inside the fingerprint: tells why it went stale
    rows: int
    files: dict[str, FileEntry]
    created_at: str
    extra: dict[str, Any] = Field(default_factory=dict)
    # {library: version} of the libraries whose numerics made it (tasks/stages.py, STAGE_LIBRARIES), compared
    # apart from the fingerprint (library_changes); empty in a manifest of an earlier genreflow.
    libraries: dict[str, str] = Field(default_factory=dict)


def write_manifest(
    root: DataRoot,
    manifest_path: str,
    *,
    name: str,
    fingerprint: str,
    files: list[str],
    rows: int,
    extra: dict[str, Any] | None = None,
    code: str = "",
    libraries: Mapping[str, str] | None = None,
) -> Manifest:
    """Record ``files`` (paths beside the manifest) as one complete output."""
    entries = {
        _relative(manifest_path, path): FileEntry(size=root.size(path), checksum=root.checksum(path),
                                                  mtime_ns=root.mtime_ns(path))
        for path in files
    }
    manifest = Manifest(
        name=name,
        fingerprint=fingerprint,
        code=code,
        rows=rows,
        files=entries,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        extra=extra or {},
        libraries=dict(libraries or {}),
    )
    root.write_bytes(manifest_path, manifest.model_dump_json(indent=2).encode())
    return manifest


def _relative(manifest_path: str, path: str) -> str:
    """``path`` relative to the manifest's folder: a file name, or ``excerpts/x.mp3`` for one in a sub-folder of
    it (a report's excerpts); files_intact finds it again with DataRoot.sibling."""
    folder = posixpath.dirname(manifest_path)
    return path[len(folder) + 1:] if folder and path.startswith(folder + "/") else posixpath.basename(path)


def read_manifest(root: DataRoot, manifest_path: str) -> Manifest | None:
    """The manifest at ``manifest_path``, or None if absent or unreadable."""
    if not root.exists(manifest_path):
        return None
    try:
        return Manifest.model_validate_json(root.read_bytes(manifest_path))
    except (ValidationError, ValueError, OSError):
        return None


def library_changes(recorded: Mapping[str, str], current: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """{library: (version recorded, version installed)} of each library of ``current`` that ``recorded`` holds
    at another version.

    A library the manifest does not record is taken to be at the installed
    version: a manifest of an earlier genreflow records none, and its output is
    adopted as it is rather than redone.
    """
    return {name: (recorded[name], version) for name, version in sorted(current.items())
            if name in recorded and recorded[name] != version}


def output_state(
    root: DataRoot, manifest_path: str, fingerprint: str, verify_checksums: bool = True,
    libraries: Mapping[str, str] | None = None,
) -> State:
    """done, stale (made from other inputs, or with other versions of ``libraries``), missing, or corrupt
    (files altered).

    ``verify_checksums``: re-hash every file whose modification time changed since it was sealed (all of
    them where the filesystem has none); without it, sizes alone are compared. ``libraries``: the installed
    versions the output must have been made with (library_changes); None compares none.
    """
    manifest = read_manifest(root, manifest_path)
    if manifest is None:
        return "missing"
    if manifest.fingerprint != fingerprint or library_changes(manifest.libraries, libraries or {}):
        return "stale"
    return "done" if files_intact(root, manifest_path, manifest, verify_checksums) else "corrupt"


def files_intact(root: DataRoot, manifest_path: str, manifest: Manifest, verify_checksums: bool = True) -> bool:
    """Whether every file ``manifest`` sealed is still there as it was sealed (see output_state)."""
    for filename, entry in manifest.files.items():
        path = root.sibling(manifest_path, filename)
        if not root.exists(path) or root.size(path) != entry.size:
            return False
        unchanged = entry.mtime_ns is not None and root.mtime_ns(path) == entry.mtime_ns
        if verify_checksums and not unchanged and root.checksum(path) != entry.checksum:
            return False
    return True

