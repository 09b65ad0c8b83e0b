"""Fetch and unpack the FMA archives, safely and resumably.

The FMA archives are large (fma_small is 7.2 GiB), so a download must survive
a dropped connection or a killed process without starting over, and nothing
half-written may ever look complete: bytes go to ``<dest>.part`` and only a
file whose sha1 matches is renamed into place. Archives come from the network,
so extraction refuses anything that could write outside its target (``..``,
absolute paths, symlinks) or fill the disk (zip bombs, lying size headers).

Plain functions, no Prefect: flows wrap them and add retries of their own.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import requests

from genreflow.storage.errors import GenreflowError

DEFAULT_BASE_URL = "https://os.unil.cloud.switch.ch/fma/"

# Which archives make up each FMA subset; audio subsets need the metadata too.
FMA_ARCHIVES: dict[str, tuple[str, ...]] = {
    "fma_metadata": ("fma_metadata.zip",),
    "fma_small": ("fma_metadata.zip", "fma_small.zip"),
    "fma_medium": ("fma_metadata.zip", "fma_medium.zip"),
}

# Published sha1 of each archive (FMA README).
FMA_SHA1: dict[str, str] = {
    "fma_metadata.zip": "f0df49ffe5f2a6008d7dc83c6915b31835dfe733",
    "fma_small.zip": "ade154f733639d52e35e32f5593efe5be76c6d70",
    "fma_medium.zip": "c67b69ea232021025fca9231fc1c7c1a063ab50b",
}

Progress = Callable[[int, int | None], None]

MAX_ATTEMPTS = 5  # consecutive failed attempts without progress before giving up
BACKOFF_S = 1.0  # first retry delay; doubles on each consecutive failure
MAX_BACKOFF_S = 30.0
RATIO_MIN_BYTES = 1 << 20  # entries smaller than this are never judged by compression ratio
HASH_CHUNK = 1 << 20
MARKER_SUFFIX = ".extracted"  # `<to>/.<archive><suffix>` says that archive was fully extracted

_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_TRANSIENT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_CONTENT_RANGE_UNSATISFIED = re.compile(r"bytes\s+\*/(\d+)")


class DownloadError(GenreflowError, RuntimeError):
    """A download or extraction failed; the message says which URL or file and what to do."""


class UnsafeArchiveError(DownloadError):
    """An archive would write outside its target or expand beyond the limits; nothing was written."""


class _Transient(Exception):
    """A failure worth retrying (dropped connection, 5xx, short body)."""


# --------------------------------------------------------------------------- download


def _part_path(dest: Path) -> Path:
    return dest.with_suffix(dest.suffix + ".part")


def _hash_file(path: Path) -> hashlib._Hash:
    """sha1 of a file, streamed, so a 7 GiB archive never sits in memory."""
    h = hashlib.sha1()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h


def _parse_total(response: requests.Response, offset: int) -> int | None:
    """Full size of the remote file from Content-Range (206) or Content-Length (200)."""
    if response.status_code == 206:
        m = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if m and m.group(3) != "*":
            return int(m.group(3))
        length = response.headers.get("Content-Length")
        return offset + int(length) if length and length.isdigit() else None
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _verify_and_finish(url: str, part: Path, dest: Path, sha1: str | None, actual: str) -> Path:
    """Rename a verified .part to dest; delete it and raise on mismatch."""
    if sha1 is not None and actual.lower() != sha1.lower():
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"sha1 mismatch for {url}: expected {sha1.lower()}, got {actual}. The partial file {part} "
            "was deleted; run again to download from scratch. If it fails again, the server is "
            "serving a different file: check the URL or the expected sha1."
        )
    os.replace(part, dest)
    return dest


def download_file(
    url: str,
    dest: Path,
    sha1: str | None = None,
    chunk_size: int = 1 << 20,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous ``.part`` and verifying ``sha1``.

    Bytes go to ``dest.part``; an existing part is resumed with ``Range``. Transient
    errors are retried with backoff, each retry resuming where the last stopped.
    Only a complete file whose sha1 matches is renamed (atomically) to ``dest``,
    so an existing ``dest`` is always complete: it is returned without a request
    when it matches ``sha1`` (or when no sha1 is given), and replaced otherwise.

    ``progress(done, total)`` is called with bytes on disk and the full size
    (None when the server does not say).
    """
    dest = Path(dest)
    part = _part_path(dest)
    if dest.exists():
        if sha1 is None or _hash_file(dest).hexdigest() == sha1.lower():
            return dest
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)

    # Running hash and size of the part; recomputed from disk only when they cannot be trusted.
    hasher = _hash_file(part) if part.exists() else hashlib.sha1()
    offset = part.stat().st_size if part.exists() else 0
    failures = 0
    with requests.Session() as session:
        while True:
            start_offset = offset
            try:
                hasher, offset, done = _attempt(
                    session, url, part, hasher, offset, chunk_size, progress, timeout
                )
                if done:
                    return _verify_and_finish(url, part, dest, sha1, hasher.hexdigest())
            except (_Transient, *_TRANSIENT_ERRORS) as exc:
                if not part.exists():
                    hasher, offset = hashlib.sha1(), 0
                elif part.stat().st_size != offset:
                    hasher, offset = _hash_file(part), part.stat().st_size
                failures = 0 if offset > start_offset else failures + 1
                if failures >= MAX_ATTEMPTS:
                    raise DownloadError(
                        f"giving up on {url} after {MAX_ATTEMPTS} failed attempts ({exc}). "
                        f"{offset} bytes are kept in {part}; run again to resume, or check the "
                        "network and the URL."
                    ) from exc
                time.sleep(min(BACKOFF_S * 2 ** max(failures - 1, 0), MAX_BACKOFF_S))
            except requests.RequestException as exc:
                raise DownloadError(f"cannot download {url}: {exc}. Check the URL (or base_url).") from exc


def _attempt(
    session: requests.Session,
    url: str,
    part: Path,
    hasher: hashlib._Hash,
    offset: int,
    chunk_size: int,
    progress: Progress | None,
    timeout: float,
) -> tuple[hashlib._Hash, int, bool]:
    """One HTTP request: returns (hash, bytes in part, whether the part is complete)."""
    headers = {"Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code == 416 and offset > 0:
            return _range_not_satisfiable(r, part, hasher, offset)
        if r.status_code in _TRANSIENT_STATUS:
            raise _Transient(f"HTTP {r.status_code}")
        if r.status_code not in (200, 206):
            raise DownloadError(
                f"HTTP {r.status_code} for {url}: check the URL (or base_url) and that the file "
                "is still published there."
            )
        if r.status_code == 206:
            m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != offset:
                # A range we did not ask for: throw the part away and start clean.
                part.unlink(missing_ok=True)
                raise _Transient(f"unexpected Content-Range {r.headers.get('Content-Range')!r}")
            mode = "ab"
        else:  # 200: the server ignored Range (or there was none): start from zero.
            hasher, offset, mode = hashlib.sha1(), 0, "wb"
        total = _parse_total(r, offset)
        if progress is not None:
            progress(offset, total)
        with part.open(mode) as f:
            for chunk in r.iter_content(chunk_size=chunk_size):
                if not chunk:
                    continue
                f.write(chunk)
                hasher.update(chunk)
                offset += len(chunk)
                if progress is not None:
                    progress(offset, total)
        if total is not None and offset < total:
            raise _Transient(f"connection closed after {offset} of {total} bytes")
        return hasher, offset, True


def _range_not_satisfiable(
    r: requests.Response, part: Path, hasher: hashlib._Hash, offset: int
) -> tuple[hashlib._Hash, int, bool]:
    """416 on a resume: the part is already complete, or it is junk to discard."""
    m = _CONTENT_RANGE_UNSATISFIED.match(r.headers.get("Content-Range", ""))
    if m is None or int(m.group(1)) == offset:
        # Complete (or size unknown): let the sha1 check decide.
        return hasher, offset, True
    part.unlink(missing_ok=True)
    raise _Transient(f"partial file of {offset} bytes does not fit a remote size of {m.group(1)}")


# --------------------------------------------------------------------------- extract


def _entry_parts(name: str) -> list[str]:
    """Path components of a zip entry name, treating backslashes as separators too."""
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def _check_entry(info: zipfile.ZipInfo, target: Path, archive: Path, max_ratio: float) -> None:
    """Refuse one entry that could escape ``target`` or is a symlink, device or bomb."""
    name = info.filename
    where = f"entry {name!r} of {archive}"
    if "\x00" in name or not _entry_parts(name):
        raise UnsafeArchiveError(f"{where} has an empty or invalid name; the archive is refused.")
    if name.startswith(("/", "\\")):
        raise UnsafeArchiveError(f"{where} is an absolute path; the archive is refused.")
    if _DRIVE.match(name):
        raise UnsafeArchiveError(f"{where} has a drive letter; the archive is refused.")
    if ".." in _entry_parts(name):
        raise UnsafeArchiveError(f"{where} contains '..'; the archive is refused.")
    resolved = target.joinpath(*_entry_parts(name)).resolve()
    if not resolved.is_relative_to(target):
        raise UnsafeArchiveError(f"{where} resolves outside {target}; the archive is refused.")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UnsafeArchiveError(f"{where} is a symlink; the archive is refused.")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise UnsafeArchiveError(f"{where} is a special file; the archive is refused.")
    if info.file_size >= RATIO_MIN_BYTES and info.file_size > max_ratio * max(info.compress_size, 1):
        raise UnsafeArchiveError(
            f"{where} expands {info.file_size} bytes from {info.compress_size} "
            f"(ratio above {max_ratio}): a likely zip bomb; the archive is refused."
        )


def _move_into(src: Path, dst: Path) -> None:
    """Move a tree into place, merging into existing folders, by renames (same filesystem)."""
    if src.is_dir() and dst.is_dir():
        for child in src.iterdir():
            _move_into(child, dst / child.name)
        src.rmdir()
        return
    if dst.is_symlink() or dst.is_file():
        dst.unlink()
    elif dst.is_dir():
        shutil.rmtree(dst)
    os.replace(src, dst)


def _remove_stale_temps(target: Path, prefix: str) -> None:
    """Temp folders left by a killed extraction of the same archive."""
    for stale in target.glob(prefix + "*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def safe_extract(
    archive: Path,
    target: Path,
    max_total_bytes: int = 64 << 30,
    max_ratio: float = 200.0,
) -> list[Path]:
    """Extract a zip into ``target`` after checking every entry; return the files written.

    The whole archive is refused (UnsafeArchiveError, nothing written) if any entry
    is absolute, has a drive letter or ``..``, resolves outside ``target``, is a
    symlink or special file, if the declared sizes add up to more than
    ``max_total_bytes``, or if a large entry compresses better than ``max_ratio``.
    The bytes actually written are counted too, since headers can lie. Files are
    extracted into a temporary folder inside ``target`` and moved into place only
    when all succeeded, so a failure or kill leaves no partial tree behind.
    """
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    target = target.resolve()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"cannot open {archive} as a zip ({exc}); delete it and download again.") from exc
    with zf:
        infos = zf.infolist()
        for info in infos:
            _check_entry(info, target, archive, max_ratio)
        declared = sum(i.file_size for i in infos)
        if declared > max_total_bytes:
            raise UnsafeArchiveError(
                f"{archive} declares {declared} bytes uncompressed, over the limit of {max_total_bytes}; "
                "the archive is refused (raise max_total_bytes if it is genuine)."
            )
        prefix = f".{archive.name}.extract-"
        _remove_stale_temps(target, prefix)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target))
        try:
            rel_files = _extract_all(zf, infos, tmp, archive, max_total_bytes, max_ratio)
            for top in sorted(tmp.iterdir()):
                _move_into(top, target / top.name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return [target / rel for rel in rel_files]


def _extract_all(
    zf: zipfile.ZipFile,
    infos: Iterable[zipfile.ZipInfo],
    tmp: Path,
    archive: Path,
    max_total_bytes: int,
    max_ratio: float,
) -> list[Path]:
    """Write every entry under ``tmp``, counting real bytes; return the files' relative paths."""
    written_total = 0
    files: list[Path] = []
    for info in infos:
        rel = Path(*_entry_parts(info.filename))
        out = tmp / rel
        if info.is_dir():
            out.mkdir(parents=True, exist_ok=True)
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        try:
            with zf.open(info) as src, out.open("wb") as dst:
                while chunk := src.read(HASH_CHUNK):
                    written += len(chunk)
                    written_total += len(chunk)
                    if written > info.file_size or written_total > max_total_bytes:
                        raise UnsafeArchiveError(
                            f"entry {info.filename!r} of {archive} wrote more bytes than declared or "
                            f"than the limit of {max_total_bytes}; extraction aborted and nothing kept."
                        )
                    if written >= RATIO_MIN_BYTES and written > max_ratio * max(info.compress_size, 1):
                        raise UnsafeArchiveError(
                            f"entry {info.filename!r} of {archive} expands beyond ratio {max_ratio}; "
                            "extraction aborted and nothing kept."
                        )
                    dst.write(chunk)
        except zipfile.BadZipFile as exc:
            raise UnsafeArchiveError(
                f"entry {info.filename!r} of {archive} is corrupt or crafted ({exc}); extraction "
                "aborted and nothing kept. Delete the archive and download it again."
            ) from exc
        files.append(rel)
    return files


# --------------------------------------------------------------------------- FMA


def _marker(to: Path, archive: str) -> Path:
    return to / f".{archive}{MARKER_SUFFIX}"


def _is_extracted(marker: Path, sha1: str | None) -> bool:
    """Whether a marker says this very archive (same sha1) was fully extracted."""
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and (sha1 is None or recorded.get("sha1") == sha1.lower())


def _write_marker(marker: Path, archive: str, sha1: str | None, files: int) -> None:
    """Write the completeness marker atomically, last, after extraction succeeded."""
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps({"archive": archive, "sha1": sha1 and sha1.lower(), "files": files}))
    os.replace(tmp, marker)


def download_fma(
    name: str = "fma_small",
    to: Path = Path("raw"),
    base_url: str = DEFAULT_BASE_URL,
    sha1s: Mapping[str, str] | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download, verify and extract the archives of FMA subset ``name`` into ``to``; return ``to``.

    An archive whose extraction marker exists is skipped without any request; a
    verified archive already on disk is not downloaded again. ``sha1s`` overrides
    the published checksums (per archive file name), e.g. for a mirror or tests.
    Archives are kept in ``to`` after extraction.
    """
    if name not in FMA_ARCHIVES:
        raise DownloadError(f"unknown FMA subset {name!r}; choose one of {sorted(FMA_ARCHIVES)}.")
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    expected = {**FMA_SHA1, **(sha1s or {})}
    for archive in FMA_ARCHIVES[name]:
        sha1 = expected.get(archive)
        marker = _marker(to, archive)
        if _is_extracted(marker, sha1):
            continue
        url = base_url.rstrip("/") + "/" + archive
        path = download_file(url, to / archive, sha1=sha1, progress=progress)
        files = safe_extract(path, to)
        _write_marker(marker, archive, sha1, len(files))
    return to
