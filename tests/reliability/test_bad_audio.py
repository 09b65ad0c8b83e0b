"""Issue 6.1: every kind of bad audio in one preprocessing run, among good demo tracks.

Each file is either quarantined with its reason or decoded correctly (the
unusual but valid ones: 8 kHz, 96 kHz, 8-bit, 6 channels), the good tracks all
go through, and no NaN or Inf reaches any shard. tests/tasks/test_audio.py
checks decode_audio on each case alone; this runs them through the flow.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from genreflow.flows.rebuild import run_command
from genreflow.storage.outputs import tracks_path
from genreflow.storage.root import DataRoot
from tests.reliability.conftest import small_config

pytestmark = pytest.mark.timeout(600)

SR = 22050
SECONDS = 12.0  # two 10 s clips, the second flush with the end (2 s to 12 s)

# track id -> (frequency of its tone in Hz, expected peak amplitude of the mono mix)
VALID = {
    "Rock/rate-8k": (440.0, 0.5),
    "Rock/rate-96k": (1000.0, 0.5),
    "Rock/pcm-u8": (660.0, 0.5),
    "Rock/six-channels": (550.0, 0.3),
}
# track id -> a word the quarantine reason must hold
BAD = {
    "Rock/empty": "empty file",
    "Rock/truncated": "",  # undecodable or too short, depending on where the mp3 was cut
    "Rock/notes": "not decodable",
    "Rock/broken-header": "not decodable",
    "Rock/silent": "silent",
    "Rock/one-second": "too short",
    "Rock/nan": "NaN or Inf",
    "Rock/inf": "NaN or Inf",
}


GOOD_MP3 = "rock-0000.mp3"  # the demo track that the truncated copies are cut from


def tone(freq: float, seconds: float, sr: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def peak_hz(y: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spectrum) * sr / len(y))


def write_bad_collection(folder: Path, good_mp3: Path) -> None:
    """The hostile and the unusual files, next to the demo's Rock tracks."""
    rock = folder / "Rock"
    (rock / "empty.mp3").write_bytes(b"")
    (rock / "truncated.mp3").write_bytes(good_mp3.read_bytes()[:4000])
    data = good_mp3.read_bytes()
    (rock / "cut-late.mp3").write_bytes(data[: len(data) * 49 // 50])  # cut in its last fifth of a second
    (rock / "notes.mp3").write_text("this is not audio\n" * 200)
    good_wav = rock / "tmp.wav"
    sf.write(good_wav, tone(440, 2, SR), SR)
    noise = np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    (rock / "broken-header.wav").write_bytes(good_wav.read_bytes()[:12] + noise)
    good_wav.unlink()
    sf.write(rock / "silent.wav", np.zeros(round(SECONDS * SR), np.float32), SR, subtype="FLOAT")
    sf.write(rock / "one-second.wav", tone(440, 1.0, SR), SR)
    nan = tone(440, SECONDS, SR)
    nan[5000:5100] = np.nan
    sf.write(rock / "nan.wav", nan, SR, subtype="FLOAT")
    inf = tone(440, SECONDS, SR)
    inf[::1000] = np.inf
    sf.write(rock / "inf.wav", inf, SR, subtype="FLOAT")
    sf.write(rock / "rate-8k.wav", tone(440, SECONDS, 8000), 8000)
    sf.write(rock / "rate-96k.wav", tone(1000, SECONDS, 96000), 96000, subtype="PCM_24")
    sf.write(rock / "pcm-u8.wav", tone(660, SECONDS, SR), SR, subtype="PCM_U8")
    channels = np.stack([tone(550, SECONDS, 44100, amp=0.3)] * 6, axis=1)
    sf.write(rock / "six-channels.wav", channels, 44100)


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> tuple[DataRoot, pd.DataFrame]:
    source = tmp_path_factory.mktemp("bad-audio") / "collection"
    shutil.copytree(demo_dir, source)
    write_bad_collection(source, source / "Rock" / GOOD_MP3)
    root_path = tmp_path_factory.mktemp("root")
    # One augmentation of each kind keeps the run short and still pushes every training track through augment.
    config = small_config(root_path, source, shard_size=8, time_stretch=[0.9], pitch_shift=[2.0])
    run_command("preprocess", config)
    root = DataRoot(str(root_path))
    return root, root.read_parquet(tracks_path(root))


def _clips(root: DataRoot, stage: str) -> pd.DataFrame:
    frames = [pd.read_parquet(p).assign(shard=p.name.removesuffix(".parquet"))
              for p in sorted(Path(root.path, stage).glob("*[0-9].parquet"))]
    return pd.concat(frames, ignore_index=True)


def test_each_bad_file_is_quarantined_with_its_reason(preprocessed: tuple[DataRoot, pd.DataFrame]) -> None:
    root, _ = preprocessed
    quarantine = root.read_parquet(root.quarantine_path()).set_index("track_id")
    assert set(quarantine.index) == set(BAD), quarantine["reason"].to_dict()
    for track_id, word in BAD.items():
        reason = quarantine.loc[track_id, "reason"]
        assert reason and word in reason, (track_id, reason)
    assert set(quarantine["stage"]) == {"decode"}


def test_unusual_but_valid_audio_is_decoded_correctly(preprocessed: tuple[DataRoot, pd.DataFrame]) -> None:
    root, _ = preprocessed
    clips = _clips(root, "decode").set_index("track_id")
    for track_id, (freq, amp) in VALID.items():
        assert track_id in clips.index, f"{track_id} was not processed"
        rows = clips.loc[[track_id]]
        assert rows["clip_index"].tolist() == [0, 1]
        for _, row in rows.iterrows():
            audio = np.load(Path(root.path, "decode", f"{row['shard']}.npy"), allow_pickle=False)
            y = audio[int(row["row"])].astype(np.float32) / 32768.0
            assert len(y) == 10 * SR
            assert peak_hz(y, SR) == pytest.approx(freq, abs=1.0), track_id
            assert np.abs(y).max() == pytest.approx(amp, abs=0.02), track_id


def test_an_mp3_cut_after_its_first_clip_keeps_that_clip(preprocessed: tuple[DataRoot, pd.DataFrame]) -> None:
    """A truncated mp3 that still holds 10 s is not thrown away: its clip is the intact file's clip."""
    root, tracks = preprocessed
    clips = _clips(root, "decode").set_index("track_id")
    original = tracks.loc[tracks["path"].str.endswith(f"Rock/{GOOD_MP3}"), "track_id"].item()

    def clip(track_id: str) -> np.ndarray:
        row = clips.loc[[track_id]].set_index("clip_index").loc[0]
        return np.load(Path(root.path, "decode", f"{row['shard']}.npy"), allow_pickle=False)[int(row["row"])]

    np.testing.assert_allclose(clip("Rock/cut-late").astype(int), clip(original).astype(int), atol=2)


def test_every_good_track_goes_through_and_the_books_balance(preprocessed: tuple[DataRoot, pd.DataFrame]) -> None:
    root, tracks = preprocessed
    quarantined = set(root.read_parquet(root.quarantine_path())["track_id"])
    processed = set(_clips(root, "mel")["track_id"])
    assert processed.isdisjoint(quarantined)
    assert processed | quarantined == set(tracks["track_id"])
    assert len(processed) == len(tracks) - len(BAD) == 24 + len(VALID) + 1  # + cut-late
    augmented = _clips(root, "augment")
    train = set(tracks.loc[tracks["split"] == "train", "track_id"]) - quarantined
    assert set(augmented["track_id"]) == train


def test_no_nan_or_inf_reaches_any_shard(preprocessed: tuple[DataRoot, pd.DataFrame]) -> None:
    root, _ = preprocessed
    checked = 0
    for stage in ("decode", "mel", "augment"):
        for path in sorted(Path(root.path, stage).glob("*[0-9].npy")):
            array = np.load(path, allow_pickle=False)
            assert np.isfinite(array).all(), path
            if stage != "decode" and array.size:  # a shard of only quarantined tracks is empty
                assert array.min() >= -80 and array.max() <= 0, path
            checked += 1
    assert checked >= 3 * 3
