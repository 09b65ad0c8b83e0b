"""Plain files on one machine's disk: hashing one in chunks, moving a staged file or folder into place, and
a file name as text a table can hold.

The FMA download, the pretrained weights, the model folder and the data root
all do both; one copy keeps their digests (stored in users' manifests and
registries) and their crash safety alike. No fsspec here: the data root passes
its own open file to :func:`hash_file`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

from genreflow.storage.errors import naming_path

if TYPE_CHECKING:
    from hashlib import _Hash

    # A hashlib name ("sha256"), a constructor (``partial(hashlib.blake2b, digest_size=16)``) or a running hash.
    Digest = str | Callable[[], _Hash] | _Hash

HASH_CHUNK = 1 << 20  # bytes read at a time: a 7 GiB archive never sits in memory, and the reads stay few


def hash_file(file: str | os.PathLike[str] | IO[bytes], digest: Digest = "sha256", chunk: int = HASH_CHUNK) -> _Hash:
    """Feed a file's bytes, read ``chunk`` at a time, into ``digest`` and return the hash object.

    ``file`` is a path (opened and closed here) or an open binary file, read
    from where it stands to its end. ``digest`` is a hashlib name, a
    constructor, or a running hash object that is updated in place (so a
    caller can mix names between files, or keep hashing what it appends). The
    digest depends on the bytes alone, never on ``chunk``.
    """
    if isinstance(digest, str):
        hasher = hashlib.new(digest)
    elif callable(digest):
        hasher = digest()
    else:
        hasher = digest
    if isinstance(file, (str, os.PathLike)):
        with open(file, "rb") as handle:
            return hash_file(handle, hasher, chunk)
    while block := file.read(chunk):
        hasher.update(block)
    return hasher


def move_into_place(staged: str | os.PathLike[str], dest: str | os.PathLike[str], *, merge: bool = False) -> None:
    """Put ``staged`` (a file or folder built beside ``dest``, on its filesystem) at ``dest`` by renames.

    Why renames: a killed process leaves the old ``dest`` or the new one,
    never a half-written one. Without ``merge``, an existing ``dest`` is
    renamed aside first and removed once ``staged`` is in (a folder replaced
    whole: nothing of the old one survives). With ``merge``, folders merge:
    each entry of ``staged`` replaces its namesake under ``dest`` and what only
    ``dest`` holds stays (an archive unpacked among other archives' files).
    A failed rename raises OSError, e.g. when another process put a ``dest``
    there meanwhile; whether its copy will do is the caller's call.
    """
    staged, dest = Path(staged), Path(dest)
    if merge:
        _merge(staged, dest)
        return
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        os.replace(dest, old)
    try:
        os.replace(staged, dest)
    finally:
        if old is not None:
            _remove(old)


def write_then_move(staged: str | os.PathLike[str], dest: str | os.PathLike[str],
                    write: Callable[[Path], object]) -> None:
    """``write(staged)`` (a library that writes a path itself: Keras, np.savez), then move it to ``dest``.

    If the write fails, nothing of it stays: a full disk leaves no half-written file to take space, and its
    OSError names ``dest`` (storage.errors.naming_path).
    """
    staged = Path(staged)
    with naming_path(dest):
        try:
            write(staged)
        except BaseException:
            _remove(staged)
            raise
        move_into_place(staged, dest)


def _merge(src: Path, dst: Path) -> None:
    """Move a tree into place, merging into existing folders, by renames."""
    if src.is_dir() and dst.is_dir():
        for child in src.iterdir():
            _merge(child, dst / child.name)
        src.rmdir()
        return
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.is_dir():
        shutil.rmtree(dst)
    os.replace(src, dst)


def _remove(path: Path) -> None:
    """Best-effort removal of a file or folder set aside: a leftover costs disk, never correctness."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def display_path(path: str) -> str:
    """``path`` as text a table can hold: a name that is not UTF-8 shows its odd bytes as ``\\xNN``.

    Parquet, JSON and M3U8 hold UTF-8 only; Python keeps such bytes as lone
    surrogates, which none of them accept. The mapping is one-to-one for any
    real library (only a name holding a literal backslash-x sequence could collide).
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path).decode("utf-8", "backslashreplace")
    return path
