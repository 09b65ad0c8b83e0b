"""mel stage: a task given ``root.url`` works on the flow's data root, whatever the worker's working folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from genreflow.model.mel import mel_batches
from genreflow.model.params import AudioConfig
from genreflow.storage.outputs import OutputSpec, state_of
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import open_shard_array
from genreflow.tasks.decode import decode_stage
from genreflow.tasks.mel import mel_stage


def test_mel_stage_given_a_relative_roots_url_from_another_folder_uses_the_flows_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--data-root data`` with ``--dask-address``: the worker's cwd is not the flow's."""
    audio = AudioConfig(clip_seconds=1.0)
    tone = tmp_path / "tone.wav"
    t = np.arange(2 * audio.sample_rate) / audio.sample_rate
    sf.write(tone, 0.3 * np.sin(2 * np.pi * 440.0 * t), audio.sample_rate)
    tracks = pd.DataFrame([{"track_id": 0, "path": str(tone), "genre": "Rock", "split": "val"}])
    decode, mel = OutputSpec("decode", "s0", inputs="fp-decode"), OutputSpec("mel", "s0", inputs="fp-mel")
    for folder in ("flow", "worker"):
        (tmp_path / folder).mkdir()

    monkeypatch.chdir(tmp_path / "flow")
    root = DataRoot("data")  # as the flow builds it from a relative --data-root
    decode_stage(root.url, decode, tracks, audio, force=False)
    monkeypatch.chdir(tmp_path / "worker")
    result = mel_stage(root.url, mel, audio, force=False)

    assert result.clips == 2 and not result.skipped
    assert state_of(root, mel) == "done"
    assert not (tmp_path / "worker" / "data").exists()
    expected = mel_batches(open_shard_array(root, "decode", "s0"), audio)
    np.testing.assert_array_equal(open_shard_array(root, "mel", "s0"), expected)
