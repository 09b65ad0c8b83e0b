"""Downloads against a local HTTP server, and extraction of hostile archives.

No internet: a threaded http.server on 127.0.0.1 serves bytes the tests build,
supports Range, can drop the first response after N bytes, and logs every
request so tests can assert what went over the wire.
"""

from __future__ import annotations

import hashlib
import io
import re
import socket
import stat
import struct
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from genreflow.tasks.sources import fma_download
from genreflow.tasks.sources.fma_download import (
    DownloadError,
    UnsafeArchiveError,
    download_file,
    download_fma,
    safe_extract,
)

FILE_SIZE = 300_000
DROP_AFTER = 100_000


@dataclass
class Request:
    path: str
    range: str | None
    status: int = 0
    sent: int = 0


@dataclass
class FakeServer:
    """What the server serves and how it misbehaves; ``log`` records every request."""

    base_url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)  # path -> bytes sent on the first request
    fail_first: dict[str, int] = field(default_factory=dict)  # path -> status of the first request
    fail_nth: dict[str, dict[int, int]] = field(default_factory=dict)  # path -> {request number: status}
    drop_always: bool = False  # apply drop_after to every request, not only the first
    always_status: int | None = None
    ignore_range: bool = False
    log: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return self.base_url + path

    def requests_for(self, path: str) -> list[Request]:
        return [r for r in self.log if r.path == path]


def _handler(state: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def _status(self, req: Request, code: int, headers: dict[str, str] | None = None) -> None:
            req.status = code
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            req = Request(self.path, self.headers.get("Range"))
            with state.lock:
                state.log.append(req)
                nth = len(state.requests_for(self.path))
            body = state.files.get(self.path)
            if body is None:
                return self._status(req, 404)
            if state.always_status is not None:
                return self._status(req, state.always_status)
            if nth == 1 and self.path in state.fail_first:
                return self._status(req, state.fail_first[self.path])
            if nth in state.fail_nth.get(self.path, {}):
                return self._status(req, state.fail_nth[self.path][nth])
            start, code = 0, 200
            if req.range and not state.ignore_range:
                m = re.fullmatch(r"bytes=(\d+)-", req.range)
                assert m, req.range
                start, code = int(m.group(1)), 206
                if start >= len(body):
                    return self._status(req, 416, {"Content-Range": f"bytes */{len(body)}"})
            payload = body[start:]
            req.status = code
            self.send_response(code)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(len(payload)))
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            limit = state.drop_after.get(self.path) if nth == 1 or state.drop_always else None
            # ``sent`` is recorded before the bytes go out: the client may finish and the
            # test read the log before this thread runs another line after the write.
            if limit is not None:
                req.sent = limit
                self.wfile.write(payload[:limit])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return None
            req.sent = len(payload)
            self.wfile.write(payload)
            return None

    return Handler


@pytest.fixture
def server() -> Iterator[FakeServer]:
    state = FakeServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries without sleeping, so the retry tests stay fast."""
    monkeypatch.setattr(fma_download, "BACKOFF_S", 0.0)


def _payload(size: int = FILE_SIZE) -> bytes:
    # Deterministic, incompressible-looking bytes.
    return b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(size // 32 + 1))[:size]


def _sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# --------------------------------------------------------------------------- download_file


def test_full_download_verifies_sha1_and_reports_progress(server: FakeServer, tmp_path: Path) -> None:
    data = _payload()
    server.files["/a.zip"] = data
    calls: list[tuple[int, int | None]] = []
    dest = tmp_path / "dl" / "a.zip"

    out = download_file(
        server.url("/a.zip"),
        dest,
        sha1=_sha1(data),
        chunk_size=16 << 10,
        progress=lambda d, t: calls.append((d, t)),
    )

    assert out == dest
    assert dest.read_bytes() == data
    assert not (tmp_path / "dl" / "a.zip.part").exists()
    assert [r.range for r in server.log] == [None]
    assert calls[0] == (0, FILE_SIZE) and calls[-1] == (FILE_SIZE, FILE_SIZE)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_existing_verified_dest_makes_no_request(server: FakeServer, tmp_path: Path) -> None:
    data = _payload()
    server.files["/a.zip"] = data
    dest = tmp_path / "a.zip"
    dest.write_bytes(data)

    assert download_file(server.url("/a.zip"), dest, sha1=_sha1(data)) == dest
    assert server.log == []


def test_interrupted_download_resumes_with_range(server: FakeServer, tmp_path: Path) -> None:
    data = _payload()
    server.files["/a.zip"] = data
    server.drop_after["/a.zip"] = DROP_AFTER
    dest = tmp_path / "a.zip"

    download_file(server.url("/a.zip"), dest, sha1=_sha1(data), chunk_size=16 << 10)

    assert dest.read_bytes() == data
    first, second = server.log
    assert first.range is None and first.sent == DROP_AFTER
    assert second.range is not None and re.fullmatch(r"bytes=\d+-", second.range)
    assert int(second.range[6:-1]) > 0
    assert second.status == 206
    assert sum(r.sent for r in server.log) < 2 * FILE_SIZE


def test_leftover_part_is_resumed_across_calls(server: FakeServer, tmp_path: Path) -> None:
    data = _payload()
    server.files["/a.zip"] = data
    dest = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(data[:DROP_AFTER])
    calls: list[tuple[int, int | None]] = []

    download_file(server.url("/a.zip"), dest, sha1=_sha1(data), progress=lambda d, t: calls.append((d, t)))

    assert dest.read_bytes() == data
    assert [(r.range, r.status, r.sent) for r in server.log] == [
        (f"bytes={DROP_AFTER}-", 206, FILE_SIZE - DROP_AFTER)
    ]
    assert calls[0] == (DROP_AFTER, FILE_SIZE) and calls[-1] == (FILE_SIZE, FILE_SIZE)


def test_server_ignoring_range_restarts_from_zero(server: FakeServer, tmp_path: Path) -> None:
    data = _payload()
    server.files["/a.zip"] = data
    server.ignore_range = True
    dest = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(b"stale bytes that must not survive")

    download_file(server.url("/a.zip"), dest, sha1=_sha1(data))

    assert dest.read_bytes() == data
    assert [(r.range is not None, r.status) for r in server.log] == [(True, 200)]


def test_416_with_complete_part_finishes(server: FakeServer, tmp_path: Path) -> None:
    data = _payload()
    server.files["/a.zip"] = data
    dest = tmp_path / "a.zip"
    (tmp_path / "a.zip.part").write_bytes(data)

    download_file(server.url("/a.zip"), dest, sha1=_sha1(data))

    assert dest.read_bytes() == data
    assert [r.status for r in server.log] == [416]


def test_sha1_mismatch_raises_and_leaves_nothing(server: FakeServer, tmp_path: Path) -> None:
    data = _payload()
    server.files["/a.zip"] = data
    dest = tmp_path / "a.zip"
    wrong = "0" * 40

    with pytest.raises(DownloadError) as err:
        download_file(server.url("/a.zip"), dest, sha1=wrong)

    msg = str(err.value)
    assert wrong in msg and _sha1(data) in msg and server.url("/a.zip") in msg
    assert not dest.exists()
    assert not (tmp_path / "a.zip.part").exists()


def test_corrupt_part_is_caught_by_sha1(server: FakeServer, tmp_path: Path) -> None:
    """A resumed part is hashed too: bad bytes already on disk cannot slip through."""
    data = _payload()
    server.files["/a.zip"] = data
    (tmp_path / "a.zip.part").write_bytes(b"x" * DROP_AFTER)

    with pytest.raises(DownloadError, match="sha1 mismatch"):
        download_file(server.url("/a.zip"), tmp_path / "a.zip", sha1=_sha1(data))
    assert list(tmp_path.iterdir()) == []


def test_transient_503_is_retried(server: FakeServer, tmp_path: Path) -> None:
    data = _payload()
    server.files["/a.zip"] = data
    server.fail_first["/a.zip"] = 503

    download_file(server.url("/a.zip"), tmp_path / "a.zip", sha1=_sha1(data))

    assert [r.status for r in server.log] == [503, 200]


def test_gives_up_after_max_attempts(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fma_download, "MAX_ATTEMPTS", 3)
    server.files["/a.zip"] = _payload()
    server.always_status = 503

    with pytest.raises(DownloadError, match=r"giving up on .*a\.zip after 3"):
        download_file(server.url("/a.zip"), tmp_path / "a.zip")
    assert len(server.log) == 3


def test_404_is_not_retried(server: FakeServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"HTTP 404 for .*/missing\.zip"):
        download_file(server.url("/missing.zip"), tmp_path / "missing.zip")
    assert len(server.log) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("status", [408, 429, 500, 502, 504])
def test_other_transient_statuses_are_retried(server: FakeServer, tmp_path: Path, status: int) -> None:
    data = _payload()
    server.files["/a.zip"] = data
    server.fail_first["/a.zip"] = status

    download_file(server.url("/a.zip"), tmp_path / "a.zip", sha1=_sha1(data))

    assert [r.status for r in server.log] == [status, 200]


@pytest.mark.parametrize("status", [400, 401, 403, 410])
def test_client_errors_are_not_retried(server: FakeServer, tmp_path: Path, status: int) -> None:
    server.files["/a.zip"] = _payload()
    server.always_status = status

    with pytest.raises(DownloadError, match=rf"HTTP {status} for .*/a\.zip: check the URL"):
        download_file(server.url("/a.zip"), tmp_path / "a.zip")
    assert len(server.log) == 1
    assert list(tmp_path.iterdir()) == []


def test_503_on_a_resume_is_retried_with_the_same_range(server: FakeServer, tmp_path: Path) -> None:
    """urllib3 repeats the request as sent, Range included, so the part is not thrown away."""
    data = _payload()
    server.files["/a.zip"] = data
    server.fail_first["/a.zip"] = 503
    (tmp_path / "a.zip.part").write_bytes(data[:DROP_AFTER])

    download_file(server.url("/a.zip"), tmp_path / "a.zip", sha1=_sha1(data))

    assert (tmp_path / "a.zip").read_bytes() == data
    assert [(r.range, r.status) for r in server.log] == [(f"bytes={DROP_AFTER}-", 503), (f"bytes={DROP_AFTER}-", 206)]


def test_dropped_body_then_503_then_resume(server: FakeServer, tmp_path: Path) -> None:
    """Both layers together: our loop resumes the broken body, urllib3 retries the 503 of the resume."""
    data = _payload()
    server.files["/a.zip"] = data
    server.drop_after["/a.zip"] = DROP_AFTER
    server.fail_nth["/a.zip"] = {2: 503}

    download_file(server.url("/a.zip"), tmp_path / "a.zip", sha1=_sha1(data), chunk_size=16 << 10)

    assert (tmp_path / "a.zip").read_bytes() == data
    assert [r.status for r in server.log] == [200, 503, 206]
    assert server.log[1].range is not None and server.log[1].range == server.log[2].range


def test_drops_that_make_progress_never_exhaust_attempts(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only interruptions without new bytes count: a flaky but moving download finishes."""
    monkeypatch.setattr(fma_download, "MAX_ATTEMPTS", 2)
    data = _payload()
    server.files["/a.zip"] = data
    server.drop_after["/a.zip"] = DROP_AFTER
    server.drop_always = True

    download_file(server.url("/a.zip"), tmp_path / "a.zip", sha1=_sha1(data), chunk_size=16 << 10)

    assert (tmp_path / "a.zip").read_bytes() == data
    # Each response is cut short (the client may lose the tail of the last chunk), so it takes
    # at least three, more than MAX_ATTEMPTS, and every resume is a Range request.
    statuses = [r.status for r in server.log]
    assert len(statuses) >= 3 and statuses == [200] + [206] * (len(statuses) - 1)


def test_drops_without_progress_give_up(
    server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fma_download, "MAX_ATTEMPTS", 3)
    server.files["/a.zip"] = _payload()
    server.drop_after["/a.zip"] = 0
    server.drop_always = True

    with pytest.raises(DownloadError, match=r"giving up on .*a\.zip after 3 .*run again to resume"):
        download_file(server.url("/a.zip"), tmp_path / "a.zip")
    assert [r.status for r in server.log] == [200, 200, 200]
    assert not (tmp_path / "a.zip").exists()


def test_connection_refused_is_retried_then_gives_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fma_download, "MAX_ATTEMPTS", 2)
    with socket.socket() as s:  # a port nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/a.zip"

    with pytest.raises(DownloadError, match=r"giving up on http://127\.0\.0\.1:\d+/a\.zip after 2 .*check the network"):
        download_file(url, tmp_path / "a.zip")
    assert not (tmp_path / "a.zip").exists()


def test_retry_policy_follows_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fma_download, "MAX_ATTEMPTS", 6)
    monkeypatch.setattr(fma_download, "BACKOFF_S", 0.5)
    monkeypatch.setattr(fma_download, "MAX_BACKOFF_S", 3.0)

    policy = fma_download._retry_policy()

    assert policy.total == 5
    assert {429, 500, 503} <= set(policy.status_forcelist or ()) and 404 not in (policy.status_forcelist or ())
    delays = []
    for _ in range(4):
        policy = policy.increment(method="GET", url="/a.zip", error=ConnectionError("test"))
        delays.append(policy.get_backoff_time())
    assert delays == [0, 1.0, 2.0, 3.0]  # immediate, then doubling, capped at MAX_BACKOFF_S
    with fma_download._session(policy) as session:
        assert session.get_adapter("http://127.0.0.1/").max_retries is policy
        assert session.get_adapter("https://example.invalid/").max_retries is policy


# --------------------------------------------------------------------------- safe_extract


def _zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
    return path


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """A target two levels down, so escapes land somewhere the test can see."""
    return tmp_path / "sandbox" / "out"


def test_safe_extract_writes_tree_and_returns_files(tmp_path: Path, target: Path) -> None:
    archive = _zip(
        tmp_path / "ok.zip", [("fma_small/", b""), ("fma_small/000/000002.mp3", b"mp3"), ("x.txt", b"x")]
    )

    files = safe_extract(archive, target)

    assert sorted(files) == [target.resolve() / "fma_small/000/000002.mp3", target.resolve() / "x.txt"]
    assert (target / "fma_small/000/000002.mp3").read_bytes() == b"mp3"
    assert _tree(target) == {"fma_small", "fma_small/000", "fma_small/000/000002.mp3", "x.txt"}


@pytest.mark.parametrize(
    "bad_name",
    ["../evil.txt", "a/../../evil.txt", "/abs/path", "C:/evil.txt", "a\\..\\..\\evil.txt", "\\abs\\evil.txt"],
)
def test_safe_extract_refuses_escaping_names(tmp_path: Path, target: Path, bad_name: str) -> None:
    archive = _zip(tmp_path / "bad.zip", [("good.txt", b"fine"), (bad_name, b"evil")])

    with pytest.raises(UnsafeArchiveError, match="refused"):
        safe_extract(archive, target)

    assert _tree(target) == set()
    assert _tree(tmp_path) == {"bad.zip", "sandbox", "sandbox/out"}
    assert not (tmp_path.parent / "evil.txt").exists()


def test_safe_extract_refuses_symlink_entries(tmp_path: Path, target: Path) -> None:
    link = zipfile.ZipInfo("link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = _zip(tmp_path / "link.zip", [("good.txt", b"fine"), (link, b"/etc/passwd")])

    with pytest.raises(UnsafeArchiveError, match="symlink"):
        safe_extract(archive, target)
    assert _tree(target) == set()


def test_safe_extract_refuses_paths_through_existing_symlink(tmp_path: Path, target: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target.mkdir(parents=True)
    (target / "escape").symlink_to(outside, target_is_directory=True)
    archive = _zip(tmp_path / "via.zip", [("escape/evil.txt", b"evil")])

    with pytest.raises(UnsafeArchiveError, match="outside"):
        safe_extract(archive, target)
    assert list(outside.iterdir()) == []


def test_safe_extract_refuses_declared_total_over_limit(tmp_path: Path, target: Path) -> None:
    archive = _zip(tmp_path / "bomb.zip", [("zeros.bin", bytes(5_000_000))])

    with pytest.raises(UnsafeArchiveError, match="over the limit"):
        safe_extract(archive, target, max_total_bytes=1_000_000, max_ratio=1e9)
    assert _tree(target) == set()


def test_safe_extract_refuses_high_compression_ratio(tmp_path: Path, target: Path) -> None:
    archive = _zip(tmp_path / "bomb.zip", [("zeros.bin", bytes(5_000_000))])

    with pytest.raises(UnsafeArchiveError, match="zip bomb"):
        safe_extract(archive, target)
    assert _tree(target) == set()


def _lie_about_size(archive: Path, name: str, fake_size: int) -> None:
    """Patch the uncompressed size of ``name`` in its local header and central directory."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        local = zf.getinfo(name).header_offset
    assert data[local : local + 4] == b"PK\x03\x04"
    struct.pack_into("<I", data, local + 22, fake_size)
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + name_len] == name.encode():
            struct.pack_into("<I", data, pos + 24, fake_size)
        pos = data.find(b"PK\x01\x02", pos + 4)
    archive.write_bytes(bytes(data))


def test_safe_extract_refuses_entry_whose_declared_size_lies(tmp_path: Path, target: Path) -> None:
    archive = _zip(tmp_path / "liar.zip", [("good.txt", b"fine"), ("liar.bin", bytes(5_000_000))])
    _lie_about_size(archive, "liar.bin", 1000)
    with zipfile.ZipFile(archive) as zf:
        assert zf.getinfo("liar.bin").file_size == 1000  # the headers now say 1000 bytes

    with pytest.raises(UnsafeArchiveError, match=r"liar\.bin"):
        safe_extract(archive, target, max_total_bytes=1_000_000)

    # good.txt was already extracted to the temp folder: it must not survive either.
    assert _tree(target) == set()


def test_safe_extract_counts_actual_bytes(
    tmp_path: Path, target: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: even if the zip reader yielded more than declared, writing stops."""
    archive = _zip(tmp_path / "small.zip", [("a.bin", b"a" * 100)])
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, info, *a, **k: io.BytesIO(bytes(3_000_000)))

    with pytest.raises(UnsafeArchiveError, match="more bytes than declared"):
        safe_extract(archive, target, max_total_bytes=1_000_000)
    assert _tree(target) == set()


def test_safe_extract_rejects_non_zip(tmp_path: Path, target: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="download again"):
        safe_extract(junk, target)


def test_safe_extract_removes_stale_temp_of_killed_run(tmp_path: Path, target: Path) -> None:
    archive = _zip(tmp_path / "ok.zip", [("x.txt", b"x")])
    stale = target / ".ok.zip.extract-killed"
    (stale / "half").mkdir(parents=True)

    safe_extract(archive, target)

    assert _tree(target) == {"x.txt"}


# --------------------------------------------------------------------------- download_fma


@pytest.fixture
def fma_server(server: FakeServer, tmp_path: Path) -> tuple[FakeServer, dict[str, str]]:
    """Tiny stand-ins for fma_metadata.zip and fma_small.zip, with their sha1s."""
    build = tmp_path / "build"
    build.mkdir()
    meta = _zip(build / "fma_metadata.zip", [("fma_metadata/tracks.csv", b"track_id,genre\n2,Hip-Hop\n")])
    small = _zip(build / "fma_small.zip", [("fma_small/000/000002.mp3", b"\xff\xfbfake mp3")])
    sha1s = {}
    for path in (meta, small):
        server.files[f"/fma/{path.name}"] = path.read_bytes()
        sha1s[path.name] = _sha1(path.read_bytes())
    return server, sha1s


def test_download_fma_end_to_end_then_rerun_skips(
    fma_server: tuple[FakeServer, dict[str, str]], tmp_path: Path
) -> None:
    server, sha1s = fma_server
    to = tmp_path / "raw"

    out = download_fma("fma_small", to=to, base_url=server.url("/fma/"), sha1s=sha1s)

    assert out == to
    assert (to / "fma_metadata" / "tracks.csv").read_bytes() == b"track_id,genre\n2,Hip-Hop\n"
    assert (to / "fma_small" / "000" / "000002.mp3").read_bytes() == b"\xff\xfbfake mp3"
    assert sorted(r.path for r in server.log) == ["/fma/fma_metadata.zip", "/fma/fma_small.zip"]
    assert (to / ".fma_small.zip.extracted").exists() and (to / ".fma_metadata.zip.extracted").exists()

    requests_before = len(server.log)
    download_fma("fma_small", to=to, base_url=server.url("/fma/"), sha1s=sha1s)
    assert len(server.log) == requests_before


def test_download_fma_reextracts_without_downloading_when_marker_missing(
    fma_server: tuple[FakeServer, dict[str, str]], tmp_path: Path
) -> None:
    """A kill after download but before the marker: the verified archive is reused."""
    server, sha1s = fma_server
    to = tmp_path / "raw"
    download_fma("fma_small", to=to, base_url=server.url("/fma/"), sha1s=sha1s)
    (to / ".fma_small.zip.extracted").unlink()
    (to / "fma_small" / "000" / "000002.mp3").unlink()
    requests_before = len(server.log)

    download_fma("fma_small", to=to, base_url=server.url("/fma/"), sha1s=sha1s)

    assert len(server.log) == requests_before
    assert (to / "fma_small" / "000" / "000002.mp3").read_bytes() == b"\xff\xfbfake mp3"
    assert (to / ".fma_small.zip.extracted").exists()


def test_download_fma_bad_sha1_leaves_no_marker(
    fma_server: tuple[FakeServer, dict[str, str]], tmp_path: Path
) -> None:
    server, _ = fma_server
    to = tmp_path / "raw"

    with pytest.raises(DownloadError, match="sha1 mismatch"):
        download_fma("fma_metadata", to=to, base_url=server.url("/fma"), sha1s={"fma_metadata.zip": "0" * 40})

    assert _tree(to) == set()


def test_download_fma_unknown_subset(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="fma_small"):
        download_fma("fma_tiny", to=tmp_path)
