"""Issue 6.5: hostile archives through ``genreflow download``, from a local HTTP server.

tests/tasks/sources/test_fma_download.py checks safe_extract and download_file one by one;
this serves each hostile fma_metadata.zip to the command itself and checks that
it exits with one error line and that nothing appears outside the target folder
(nor any extracted entry or completion marker inside it).
"""

from __future__ import annotations

import hashlib
import io
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from genreflow.flows.cli import main
from genreflow.tasks.sources import fma_download
from tests.tasks.sources.test_fma_download import FakeServer, server  # noqa: F401 - the local HTTP server fixture

ARCHIVE = "fma_metadata.zip"


def _zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, payload in entries:
            archive.writestr(name, payload)
    return buffer.getvalue()


def _symlink_entry() -> zipfile.ZipInfo:
    link = zipfile.ZipInfo("fma_metadata/link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    return link


GOOD = ("fma_metadata/tracks.csv", b"track_id\n")
HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "dot-dot": (lambda: _zip([GOOD, ("../../evil.txt", b"evil")]), "contains '..'"),
    "absolute": (lambda: _zip([GOOD, ("/tmp/genreflow-evil.txt", b"evil")]), "is an absolute path"),
    "symlink": (lambda: _zip([GOOD, (_symlink_entry(), b"/etc/passwd")]), "is a symlink"),
    "zip bomb": (lambda: _zip([GOOD, ("fma_metadata/zeros.bin", bytes(20_000_000))]), "likely zip bomb"),
    "through a symlink in the target": (lambda: _zip([GOOD, ("escape/evil.txt", b"evil")]), "resolves outside"),
}


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def _download(server: FakeServer, target: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:  # noqa: F811
    code = main(["download", "fma_metadata", "--to", str(target), "--base-url", server.url("/fma/")])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_archive_is_refused_and_nothing_escapes(
    kind: str, server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build, expected = HOSTILE[kind]
    payload = build()
    server.files[f"/fma/{ARCHIVE}"] = payload
    monkeypatch.setitem(fma_download.FMA_SHA1, ARCHIVE, hashlib.sha1(payload).hexdigest())  # a mirror we trust
    sandbox = tmp_path / "sandbox"
    target = sandbox / "raw"
    outside = tmp_path / "outside"
    outside.mkdir()
    if kind == "through a symlink in the target":
        target.mkdir(parents=True)
        (target / "escape").symlink_to(outside, target_is_directory=True)
    before = _tree(tmp_path)

    code, lines = _download(server, target, capsys)

    assert code == 1 and len(lines) == 1, lines
    assert lines[0].startswith("genreflow: error: entry") and expected in lines[0] and "refused" in lines[0], lines
    written = _tree(tmp_path) - before - {"sandbox", "sandbox/raw"}
    assert written == {f"sandbox/raw/{ARCHIVE}"}, written  # the verified download, and nothing else
    assert not Path("/tmp/genreflow-evil.txt").exists()
    assert not (tmp_path.parent / "evil.txt").exists() and list(outside.iterdir()) == []
    assert not (target / f".{ARCHIVE}.extracted").exists()


def test_wrong_sha1_is_refused_and_nothing_is_kept(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]  # noqa: F811
) -> None:
    server.files[f"/fma/{ARCHIVE}"] = _zip([GOOD])  # not the published archive: its sha1 cannot match
    target = tmp_path / "raw"

    code, lines = _download(server, target, capsys)

    assert code == 1 and len(lines) == 1
    assert f"sha1 mismatch for {server.url('/fma/')}{ARCHIVE}: expected {fma_download.FMA_SHA1[ARCHIVE]}" in lines[0]
    assert _tree(tmp_path) == {"raw"} and _tree(target) == set()
