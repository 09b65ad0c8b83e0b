"""``genreflow status`` counts what is done, stale and missing, from the manifests alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from genreflow.flows.config import build_config
from genreflow.flows.plan import plan_shards
from genreflow.flows.status import collect_status, print_status
from genreflow.storage.outputs import OutputSpec, open_output, output_path, tracks_path
from genreflow.storage.root import DataRoot
from genreflow.storage.shards import write_shard


def _ingested(root: DataRoot, tmp_path: Path) -> pd.DataFrame:
    rows = []
    for i, split in enumerate(["train", "train", "val"]):
        path = tmp_path / f"t{i}.wav"
        path.write_bytes(b"x" * 10)
        rows.append({"track_id": i, "path": str(path), "genre": "Rock", "split": split, "artist": None, "shard": i})
    tracks = pd.DataFrame(rows)
    root.write_parquet(tracks_path(root), tracks)
    return tracks


def test_nothing_ingested(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = build_config(None, data_root=str(tmp_path / "root"))
    assert collect_status(config) == {"data_root": DataRoot(str(tmp_path / "root")).url, "ingested": False}
    print_status(config)
    assert "nothing ingested yet" in capsys.readouterr().out


def test_counts_follow_the_manifests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = build_config(None, data_root=str(tmp_path / "root"))
    root = DataRoot(config.run.data_root)
    plans = plan_shards(_ingested(root, tmp_path), config)
    index = pd.DataFrame({"track_id": [0], "row": [0]})
    with open_output(root, plans[0].decode) as out:
        write_shard(out, array=np.zeros((1, 4), np.int16), index=index)
    other_parameters = OutputSpec("decode", plans[1].shard, plans[1].decode.code, plans[1].decode.inputs, {"sr": 1})
    with open_output(root, other_parameters) as out:
        write_shard(out, array=np.zeros((1, 4), np.int16), index=index)
    status = collect_status(config)
    assert (status["tracks"], status["shards"], status["quarantined"]) == (3, 3, 0)
    assert status["stages"]["decode"] == {"done": 1, "stale": 1, "missing": 1}
    assert status["stages"]["mel"] == {"missing": 3}
    assert status["stages"]["augment"] == {"missing": 2}  # the val shard is never augmented
    assert (status["stats"], status["baseline"], status["train"]) == ("missing", "missing", "missing")
    print_status(config)
    assert "3 tracks in 3 shards, 0 quarantined" in capsys.readouterr().out


def test_an_altered_shard_is_corrupt(tmp_path: Path) -> None:
    config = build_config(None, data_root=str(tmp_path / "root"))
    root = DataRoot(config.run.data_root)
    plans = plan_shards(_ingested(root, tmp_path), config)
    with open_output(root, plans[0].decode) as out:
        write_shard(out, array=np.zeros((1, 4), np.int16), index=pd.DataFrame({"track_id": [0], "row": [0]}))
    npy = Path(root.local_path(output_path(root, "decode", plans[0].shard, ".npy")))
    npy.write_bytes(npy.read_bytes()[:-2] + b"\x01\x01")
    assert collect_status(config)["stages"]["decode"] == {"corrupt": 1, "missing": 2}


def test_a_changed_library_version_makes_what_it_made_stale_and_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from genreflow.tasks import stages

    config = build_config(None, data_root=str(tmp_path / "root"))
    root = DataRoot(config.run.data_root)
    tracks = _ingested(root, tmp_path)
    plans = plan_shards(tracks, config)
    index = pd.DataFrame({"track_id": [0], "row": [0]})
    for plan in plans:  # the last decode shard as an earlier genreflow sealed it: with no versions
        decode = plan.decode if plan is not plans[-1] else replace(plan.decode, libraries=())
        for spec in (decode, plan.mel):
            with open_output(root, spec) as out:
                write_shard(out, array=np.zeros((1, 4), np.int16), index=index)
    assert collect_status(config)["stages"]["decode"] == {"done": 3} and collect_status(config)[
        "dependencies_changed"] == []

    installed = stages.library_version
    for library, stale_decode in (("soxr", 2), ("librosa", 0)):
        monkeypatch.setattr(stages, "library_version",
                            lambda name, library=library: "0.0.1" if name == library else installed(name))
        status = collect_status(config)
        # soxr makes decode (and so mel); librosa makes mel only. An output that recorded no versions is adopted.
        assert status["stages"]["decode"] == {k: v for k, v in {"done": 3 - stale_decode,
                                                                 "dependency-changed": stale_decode}.items() if v}
        assert status["stages"]["mel"] == {"dependency-changed": 3}
        assert status["dependencies_changed"] == [f"{library} {installed(library)} → 0.0.1"]
        print_status(config)
        assert f"stale: dependency changed ({library} {installed(library)} → 0.0.1)" in capsys.readouterr().out
