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
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from genreflow.storage.errors import GenreflowError
from genreflow.storage.files import HASH_CHUNK, hash_file, move_into_place

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

MAX_ATTEMPTS = 5  # attempts per request (connect errors, 5xx/429), and consecutive resumes without progress
BACKOFF_S = 1.0  # urllib3 backoff_factor: the first retry is immediate, retry n waits BACKOFF_S * 2**(n-1)
MAX_BACKOFF_S = 30.0
RATIO_MIN_BYTES = 1 << 20  # entries smaller than this are never judged by compression ratio
MARKER_SUFFIX = ".extracted"  # `<to>/.<archive><suffix>` says that archive was fully extracted

_TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_CONTENT_RANGE_UNSATISFIED = re.compile(r"bytes\s+\*/(\d+)")


class DownloadError(GenreflowError, RuntimeError):
    """A download or extraction failed; the message says which URL or file and what to do."""


class UnsafeArchiveError(DownloadError):
    """An archive would write outside its target or expand beyond the limits; nothing was written."""


class _Interrupted(Exception):
    """A response ended before the file did (body cut off, or a part to restart): resume it."""


# --------------------------------------------------------------------------- download


def _part_path(dest: Path) -> Path:
    return dest.with_suffix(dest.suffix + ".part")


@dataclass
class _Part:
    """The ``.part`` file with its running sha1 and size.

    Kept outside any one request, so that after a dropped body the bytes already
    written are neither lost nor hashed again from disk.
    """

    path: Path
    hasher: hashlib._Hash
    size: int

    @classmethod
    def load(cls, path: Path) -> _Part:
        """Pick up a part left by an earlier run (or start empty)."""
        if path.exists():
            return cls(path, hash_file(path, hashlib.sha1), path.stat().st_size)
        return cls(path, hashlib.sha1(), 0)

    def discard(self) -> None:
        """Throw the bytes away, so the next request starts from zero."""
        self.path.unlink(missing_ok=True)
        self.hasher, self.size = hashlib.sha1(), 0


def _retry_policy() -> Retry:
    """urllib3 retries for one request: connection errors and 5xx/429, with capped backoff.

    Read at call time so MAX_ATTEMPTS and BACKOFF_S stay configurable. Retry-After
    is not honoured, so no server can stall a download beyond MAX_BACKOFF_S per retry.
    Other statuses (404, 403, ...) are returned at once; ``raise_on_status=False``
    returns the last transient response so the caller can name it.
    """
    return Retry(
        total=MAX_ATTEMPTS - 1,
        status_forcelist=_TRANSIENT_STATUS,
        allowed_methods=frozenset({"GET"}),
        backoff_factor=BACKOFF_S,
        backoff_max=MAX_BACKOFF_S,
        respect_retry_after_header=False,
        raise_on_status=False,
    )


def _session(retry: Retry) -> requests.Session:
    """A session whose every request goes through ``retry``."""
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


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


def _giving_up(url: str, part: _Part, why: object) -> DownloadError:
    """The one message for every exhausted retry budget: the part is kept, so rerunning resumes."""
    return DownloadError(
        f"giving up on {url} after {MAX_ATTEMPTS} failed attempts ({why}). "
        f"{part.size} bytes are kept in {part.path}; run again to resume, or check the "
        "network and the URL."
    )


def download_file(
    url: str,
    dest: Path,
    sha1: str | None = None,
    chunk_size: int = 1 << 20,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60,
) -> Path:
    """Download ``url`` to ``dest``, resuming a previous ``.part`` and verifying ``sha1``.

    Bytes go to ``dest.part``; an existing part is resumed with ``Range``. Only a
    complete file whose sha1 matches is renamed (atomically) to ``dest``, so an
    existing ``dest`` is always complete: it is returned without a request when it
    matches ``sha1`` (or when no sha1 is given), and replaced otherwise.

    Two layers of retry. Each request is retried by urllib3 (``_retry_policy``) on
    connection errors and 5xx/429, up to MAX_ATTEMPTS attempts. urllib3 cannot
    retry a body that breaks mid-stream, since it has handed the response over by
    then; so the loop here sends a new ``Range`` request from where the part ends.
    A response that added bytes resumes at once with a fresh budget; MAX_ATTEMPTS
    interruptions in a row without progress give up, with urllib3's backoff between.

    ``progress(done, total)`` is called with bytes on disk and the full size
    (None when the server does not say).
    """
    dest = Path(dest)
    if dest.exists():
        if sha1 is None or hash_file(dest, hashlib.sha1).hexdigest() == sha1.lower():
            return dest
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)

    part = _Part.load(_part_path(dest))
    policy = _retry_policy()
    stalls = policy  # counts interruptions in a row that added no bytes
    with _session(policy) as session:
        while True:
            start = part.size
            try:
                _request(session, url, part, chunk_size, progress, timeout)
                return _verify_and_finish(url, part.path, dest, sha1, part.hasher.hexdigest())
            except _Interrupted as exc:
                if part.size > start:
                    stalls = policy
                    continue
                try:
                    stalls = stalls.increment(method="GET", url=url, error=exc)
                except MaxRetryError:
                    raise _giving_up(url, part, exc) from exc
                stalls.sleep()


def _request(
    session: requests.Session,
    url: str,
    part: _Part,
    chunk_size: int,
    progress: Progress | None,
    timeout: float,
) -> None:
    """One request (retried inside by urllib3) appending to ``part``; returns when it is complete.

    Raises _Interrupted when the body broke off or the part had to be discarded,
    DownloadError when retrying cannot help.
    """
    headers = {"Accept-Encoding": "identity"}
    if part.size > 0:
        headers["Range"] = f"bytes={part.size}-"
    try:
        r = session.get(url, headers=headers, stream=True, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:  # urllib3 retries exhausted
        raise _giving_up(url, part, exc) from exc
    except requests.RequestException as exc:
        raise DownloadError(f"cannot download {url}: {exc}. Check the URL (or base_url).") from exc
    with r:
        if r.status_code == 416 and part.size > 0:
            _range_not_satisfiable(r, part)
            return
        if r.status_code in _TRANSIENT_STATUS:  # urllib3 retries exhausted
            raise _giving_up(url, part, f"HTTP {r.status_code}")
        if r.status_code not in (200, 206):
            raise DownloadError(
                f"HTTP {r.status_code} for {url}: check the URL (or base_url) and that the file "
                "is still published there."
            )
        if r.status_code == 206:
            m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != part.size:
                # A range we did not ask for: throw the part away and start clean.
                part.discard()
                raise _Interrupted(f"unexpected Content-Range {r.headers.get('Content-Range')!r}")
            mode = "ab"
        else:  # 200: the server ignored Range (or there was none): start from zero.
            part.hasher, part.size, mode = hashlib.sha1(), 0, "wb"
        total = _parse_total(r, part.size)
        if progress is not None:
            progress(part.size, total)
        with part.path.open(mode) as f:
            try:
                for chunk in r.iter_content(chunk_size=chunk_size):
                    if not chunk:
                        continue
                    f.write(chunk)
                    part.hasher.update(chunk)
                    part.size += len(chunk)
                    if progress is not None:
                        progress(part.size, total)
            except (requests.exceptions.ChunkedEncodingError, requests.ConnectionError) as exc:
                raise _Interrupted(f"connection broke after {part.size} bytes ({exc})") from exc
        if total is not None and part.size < total:
            raise _Interrupted(f"connection closed after {part.size} of {total} bytes")


def _range_not_satisfiable(r: requests.Response, part: _Part) -> None:
    """416 on a resume: the part is already complete, or it is junk to discard."""
    m = _CONTENT_RANGE_UNSATISFIED.match(r.headers.get("Content-Range", ""))
    if m is None or int(m.group(1)) == part.size:
        return  # Complete (or size unknown): let the sha1 check decide.
    size = part.size
    part.discard()
    raise _Interrupted(f"partial file of {size} bytes does not fit a remote size of {m.group(1)}")


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
                move_into_place(top, target / top.name, merge=True)
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
