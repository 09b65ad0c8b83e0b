"""A user's library as files to predict: folders walked safely, each file once, and each file's identity.

A real library is not a clean tree. Folders link to folders (a NAS mounted
twice, ``Albums/Favourites -> ../Artist``), some links point back up the tree,
some files cannot be read, some names are not UTF-8, and files come and go
while a run lists them. :func:`list_library` walks folders with symlinks
followed but every real folder listed once, and lists every real file once,
under the first path that reaches it; every other path it met is in
``duplicates`` or ``problems`` with the reason, so each path has one line
somewhere. What a file cannot be predicted for (missing, a FIFO, undecodable)
is decided later, by the predictor, as that file's row.

A file's identity (:func:`file_identity`) is what decides whether an earlier
prediction of it still holds: its size and modification time, or with
``content_hash`` its size and a hash of its bytes, for libraries whose mtimes
are not to be trusted (some sync tools and NAS copies reset them).
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from genreflow.model.audio import AUDIO_EXTENSIONS
from genreflow.storage.errors import GenreflowError

HASH_CHUNK = 1 << 20  # bytes read at a time for --content-hash
HASH_THREADS = 4  # hashlib releases the GIL on large reads: a few threads keep a disk or NAS busy


class PredictInputError(GenreflowError, ValueError):
    """An input list that cannot be read: a CSV without a path column, no audio files at all."""


@dataclass
class Listing:
    """What a library's inputs name: the files to predict, and the paths that are not predicted, with why."""

    files: list[str] = field(default_factory=list)  # absolute, as reached (links not resolved), each file once
    stats: dict[str, os.stat_result | None] = field(default_factory=dict)  # of each file (None: cannot stat)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (path, the listed path of the same file)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): folders not listed


def read_path_csv(csv_path: Path) -> list[str]:
    """The ``path`` column of a CSV of files; relative paths are relative to the CSV's folder.

    The same rule as the csv source's ``path,genre`` files, so a library's
    label CSV can be predicted as it is.
    """
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise PredictInputError(f"{csv_path}: cannot read it as a CSV of files ({exc})") from None
    if "path" not in frame.columns:
        raise PredictInputError(f"{csv_path}: a CSV of files needs a header line with a 'path' column; "
                                f"it has {', '.join(map(repr, frame.columns)) or 'no columns'}")
    folder = csv_path.parent
    return [str(folder / p) for p in frame["path"].str.strip() if p]


def _audio(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except (OSError, ValueError):
        return None


def _reason(exc: OSError) -> str:
    return exc.strerror.lower() if exc.strerror else type(exc).__name__


class _Walker:
    """Folders walked once each, by their real identity (device, inode), whatever path reaches them."""

    def __init__(self, listing: Listing) -> None:
        self.listing = listing
        self.folders: dict[tuple[int, int], str] = {}  # real folder -> the path it was first listed under

    def walk(self, top: str) -> list[str]:
        """Audio files under ``top``, sorted by path, as ``sorted(rglob)`` listed them; links followed once.

        Real folders are walked before linked ones, so a folder reached both ways
        is listed under its own path and the link is the duplicate.
        """
        found: list[str] = []
        real, linked = [top], []
        while real or linked:
            folder = real.pop() if real else linked.pop()
            try:
                st = os.stat(folder)
            except OSError as exc:
                self.listing.problems.append((folder, f"cannot open the folder: {_reason(exc)}"))
                continue
            key = (st.st_dev, st.st_ino)
            if key in self.folders:
                first = self.folders[key]
                loop = (folder + os.sep).startswith(first + os.sep)
                what = "a symlink loop back to" if loop else "the same folder as"
                self.listing.duplicates.append((folder, f"{what} {first}"))
                continue
            self.folders[key] = folder
            try:
                with os.scandir(folder) as entries:
                    items = sorted((entry.name, entry.path) for entry in entries)
            except OSError as exc:
                self.listing.problems.append((folder, f"cannot list the folder: {_reason(exc)}"))
                continue
            for name, path in items:
                try:
                    is_dir = stat.S_ISDIR(os.stat(path).st_mode)
                except OSError:
                    is_dir = False  # a broken link or a link loop: a file row says why, if it looks like audio
                if is_dir:
                    (linked if os.path.islink(path) else real).append(path)
                elif _audio(name):
                    found.append(path)
        return sorted(found)


def expand_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """The files that inputs name, as given: files, audio files under folders, the paths a CSV lists.

    Folders are walked recursively in sorted order, symlinked folders followed
    once; a ``.csv`` names files in its ``path`` column. Missing files stay in the
    list: their row says "no such file".
    """
    return _expand(inputs, Listing())


def _expand(inputs: Iterable[str | Path], listing: Listing) -> list[str]:
    walker = _Walker(listing)
    files: list[str] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += walker.walk(str(item))
        elif item.suffix.lower() == ".csv" and item.is_file():
            files += read_path_csv(item)
        else:
            files.append(str(item))
    return files


def list_library(inputs: Iterable[str | Path]) -> Listing:
    """Absolute paths of the files to predict (:func:`expand_inputs`), each real file once.

    Absolute, so that every worker opens the same file whatever its working
    directory, and the table's path column joins back to a library
    unambiguously. A file reached by two paths through symlinks (a link to it, a
    folder linked twice, a file named twice) is listed under the first, its own
    name before a link's; the others are in ``duplicates``. Hard links are files
    of their own (as a copy would be).
    """
    listing = Listing()
    chosen: dict[str, str] = {}  # a file's real path (links resolved) -> the path it is listed under
    paths = list(dict.fromkeys(map(os.path.abspath, _expand(inputs, listing))))
    real = {path: os.path.realpath(path) for path in paths}
    for path in paths:
        first = chosen.setdefault(real[path], path)
        if first != path and os.path.islink(first) and not os.path.islink(path):
            chosen[real[path]] = path  # the file's own name rather than a link to it
    listed = set(chosen.values())
    for path in paths:
        if path in listed:
            listing.files.append(path)
            listing.stats[path] = _stat(path)
        else:
            listing.duplicates.append((path, f"the same file as {chosen[real[path]]}"))
    return listing


def collect_files(inputs: Iterable[str | Path]) -> list[str]:
    """The files :func:`list_library` lists, in order."""
    return list_library(inputs).files


# --------------------------------------------------------------------------- identity


def file_identity(path: str, st: os.stat_result | None = None, content_hash: bool = False) -> str:
    """What a file's prediction is valid for: ``size:mtime_ns``, or with ``content_hash`` ``size:b2-<hash>``.

    "" for a file that cannot be stat'ed (missing, a link loop) and ``special:<type>`` for a
    FIFO, socket or device: both are failure rows, and stay so until the path changes.
    """
    st = st if st is not None else _stat(path)
    if st is None:
        return ""
    if not stat.S_ISREG(st.st_mode):
        return f"special:{stat.S_IFMT(st.st_mode):o}"
    if not content_hash:
        return f"{st.st_size}:{st.st_mtime_ns}"
    digest = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        return f"unreadable:{_reason(exc)}"
    return f"{st.st_size}:b2-{digest.hexdigest()}"


def identities(files: Sequence[str], stats: dict[str, os.stat_result | None] | None = None,
               content_hash: bool = False) -> list[str]:
    """:func:`file_identity` of each file, with the listing's stats; content hashes on a few threads."""
    stats = stats or {}

    def one(path: str) -> str:
        return file_identity(path, stats.get(path), content_hash)

    if not content_hash:
        return [one(path) for path in files]
    with ThreadPoolExecutor(HASH_THREADS) as pool:
        return list(pool.map(one, files))
