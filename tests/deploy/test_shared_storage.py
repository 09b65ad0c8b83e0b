"""Cluster-facing checks of the command line: object-store data roots and ``genreflow serve``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from prefect.settings import PREFECT_API_URL, temporary_settings

from genreflow.flows.cli import main
from genreflow.flows.config import ConfigError, build_config
from genreflow.flows.rebuild import preflight
from genreflow.flows.serve import ENTRY_FLOWS, serve_rebuild
from genreflow.model.params import AudioConfig
from genreflow.storage.outputs import OutputSpec, state_of
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import open_shard_array
from genreflow.tasks.decode import decode_stage
from genreflow.tasks.mel import mel_stage

REMOTE = "memory://genreflow-shared-storage-test"  # an fsspec URL that is not a local path, like s3://


def test_preprocessing_may_use_an_object_store_data_root(tmp_path: Path) -> None:
    """preflight lets preprocessing through, and its stages really write and read shards there."""
    preflight(build_config(None, data_root=REMOTE, to_stage="augment"))
    preflight(build_config(None, data_root=REMOTE, to_stage="stats"))
    audio = AudioConfig(clip_seconds=1.0)
    rows = []
    for i, freq in enumerate((220.0, 440.0)):
        path = tmp_path / f"tone{i}.wav"
        t = np.arange(2 * audio.sample_rate) / audio.sample_rate
        sf.write(path, 0.3 * np.sin(2 * np.pi * freq * t), audio.sample_rate)
        rows.append({"track_id": i, "path": str(path), "genre": "Rock", "split": "val"})
    tracks = pd.DataFrame(rows)
    decode, mel_spec = OutputSpec("decode", "s0", inputs="fp-decode"), OutputSpec("mel", "s0", inputs="fp-mel")
    decoded = decode_stage(REMOTE, decode, tracks, audio, force=False)
    mel = mel_stage(REMOTE, mel_spec, audio, force=False)
    root = DataRoot(REMOTE)
    assert (decoded.clips, mel.clips) == (4, 4)  # two whole 1 s windows of each 2 s tone
    assert state_of(root, decode) == "done"
    assert state_of(root, mel_spec) == "done"
    assert open_shard_array(root, "mel", "s0").shape == (4, audio.n_mels, audio.frames)
    assert decode_stage(REMOTE, decode, tracks, audio, force=False).skipped  # a rerun reuses it


@pytest.mark.parametrize("overrides", [{}, {"from_stage": "train"}, {"from_stage": "evaluate"}])
def test_training_on_an_object_store_data_root_is_refused_before_any_work(overrides: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"not a local path, and .*need one"):
        preflight(build_config(None, data_root=REMOTE, **overrides))


def test_cli_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rebuild", "--data-root", REMOTE]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genreflow: error: --data-root memory://") and "\n" not in err


def test_serve_without_a_prefect_server_says_how_to_start_one(capsys: pytest.CaptureFixture[str]) -> None:
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["serve", "--flow", "preprocess"]) == 2
    assert "prefect server start" in capsys.readouterr().err


def test_serve_refuses_a_bad_cron_and_an_unknown_flow() -> None:
    config = build_config(None)
    with pytest.raises(ConfigError, match="not a valid cron"):
        serve_rebuild(config, cron="every night", name="x")
    with pytest.raises(ConfigError, match="--flow"):
        serve_rebuild(config, cron="0 2 * * *", name="x", command="predict")
    assert set(ENTRY_FLOWS) == {"rebuild", "preprocess", "train"}
