"""FMA end to end: download tiny archives from a local server, preprocess, quarantine the known bad files."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from genreflow.flows.rebuild import run_command
from genreflow.storage.outputs import tracks_path
from genreflow.storage.root import DataRoot
from genreflow.tasks.sources.fma_download import download_fma
from tests.flows.conftest import small_config
from tests.tasks.collection_files import write_fma_tracks
from tests.tasks.sources.test_fma_download import FakeServer, server  # noqa: F401 - the local HTTP server fixture

pytestmark = pytest.mark.timeout(600)

GOOD = [(2, "training", "Hip-Hop"), (3, "training", "Hip-Hop"), (5, "validation", "Hip-Hop"),
        (10, "test", "Hip-Hop"), (140, "training", "Folk"), (141, "training", "Folk"), (148, "validation", "Folk"),
        (182, "test", "Folk")]
NO_AUDIO = (99134, 108925, 133297)  # FMA's files without audio
SHORT = (98565, 98567, 98569)  # FMA's files much shorter than 30 s


def _mp3(seconds: float, seed: int) -> bytes:
    import io

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 44100)) / 44100
    tone = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t) + 0.05 * rng.standard_normal(t.size)
    buffer = io.BytesIO()
    sf.write(buffer, np.stack([tone, tone], axis=1).astype(np.float32), 44100, format="MP3")
    return buffer.getvalue()


def _member(track_id: int) -> str:
    """fma_small/000/000002.mp3: the folder is the first 3 of the 6 zero-padded digits."""
    return f"fma_small/{track_id // 1000:03d}/{track_id:06d}.mp3"


def _zip(entries: dict[str, bytes]) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, payload in entries.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def test_download_then_preprocess_quarantines_fmas_bad_files(server: FakeServer, tmp_path: Path) -> None:  # noqa: F811
    rows = [(tid, "small", split, genre, tid % 5) for tid, split, genre in GOOD]
    rows += [(tid, "small", "training", "Rock", 50 + i) for i, tid in enumerate(NO_AUDIO + SHORT)]
    metadata_dir = tmp_path / "meta"
    write_fma_tracks(metadata_dir / "fma_metadata" / "tracks.csv", rows)
    audio: dict[str, bytes] = {}
    for tid, *_ in GOOD:
        audio[_member(tid)] = _mp3(10.25, tid)  # one clip: the tail is within the pad tolerance
    audio[_member(99134)] = b"ID3\x03\x00\x00\x00\x00\x00\x00"  # a tag, no frames
    audio[_member(108925)] = b""
    audio[_member(133297)] = bytes(range(256)) * 8
    for tid in SHORT:
        audio[_member(tid)] = _mp3(1.5, tid)
    server.files["/fma_metadata.zip"] = _zip(
        {"fma_metadata/tracks.csv": (metadata_dir / "fma_metadata" / "tracks.csv").read_bytes()})
    server.files["/fma_small.zip"] = _zip(audio)
    sha1s = {name.lstrip("/"): hashlib.sha1(data).hexdigest() for name, data in server.files.items()}

    raw = download_fma("fma_small", to=tmp_path / "raw", base_url=server.url("/"), sha1s=sha1s)
    assert (raw / "fma_small" / "000" / "000002.mp3").is_file()

    config = small_config(tmp_path / "root", raw, source="fma", to_stage="mel")
    run_command("preprocess", config)

    root = DataRoot(config.run.data_root)
    tracks = root.read_parquet(tracks_path(root)).set_index("track_id")
    assert tracks.loc["000002", "split"] == "train" and tracks.loc["000005", "split"] == "val"
    assert tracks.loc["000010", "split"] == "test" and tracks.loc["000002", "artist"] == "2"
    quarantine = root.read_parquet(root.quarantine_path()).set_index("track_id")
    assert set(quarantine.index) == {f"{tid:06d}" for tid in NO_AUDIO + SHORT}
    for tid in SHORT:
        assert "too short" in quarantine.loc[f"{tid:06d}", "reason"]
    good_clips = sum(len(np.load(p, mmap_mode="r")) for p in (Path(config.run.data_root) / "mel").glob("*[0-9].npy"))
    assert good_clips == len(GOOD)
