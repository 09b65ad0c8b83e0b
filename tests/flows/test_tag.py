"""``genreflow tag``: from a predictions table or by predicting the library, a dry run, --apply, --undo."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

# Before TensorFlow (tests.model.test_export imports it): Prefect's logging set-up closes the handlers it finds,
# absl's among them (as tests/flows/test_predict_flow.py does).
import genreflow.flows.predict_flow  # noqa: F401
from genreflow.flows.cli import main
from genreflow.tasks.tags import read_genre
from tests.model.test_export import save_model, write_music
from tests.tasks.test_tags import make_audio, payload_hash, set_tags


def test_tag_from_a_csv_table_dry_run_apply_and_undo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    library = tmp_path / "library"
    library.mkdir()
    songs = {name: make_audio(library / name) for name in ("a.mp3", "b.flac", "c.ogg", "d.flac")}
    set_tags(songs["d.flac"], ["Jazz"])
    table = pd.DataFrame({"path": [str(p) for p in songs.values()], "genre": ["Rock", "Pop", "Folk", "Rock"],
                          "probability": [0.9, 0.8, 0.2, 0.95], "top3": ["", "", "", ""], "model": "run-x",
                          "error": ""})
    csv = tmp_path / "predictions.csv"
    table.to_csv(csv, index=False)
    before = {name: path.read_bytes() for name, path in songs.items()}
    payloads = {name: payload_hash(path) for name, path in songs.items()}

    # Without --min-confidence the table's own decision stands (predict made it with the model's threshold).
    assert main(["tag", str(library), "--predictions", str(csv)]) == 0
    assert f"would write: {songs['c.ogg']}: (none) -> Folk (0.20)" in capsys.readouterr().out.splitlines()
    table.assign(genre=["Rock", "Pop", "unknown", "Rock"], top3=["", "", "Folk:0.200;Pop:0.100", ""]).to_csv(
        csv, index=False)
    assert main(["tag", str(library), "--predictions", str(csv)]) == 0
    assert f"skip: {songs['c.ogg']}: the model's decision is unknown: nothing to write" in \
        capsys.readouterr().out.splitlines()
    assert main(["tag", str(library), "--predictions", str(csv), "--min-confidence", "0.1"]) == 0  # top3's top genre
    assert f"would write: {songs['c.ogg']}: (none) -> Folk (0.20)" in capsys.readouterr().out.splitlines()
    assert main(["tag", str(library), "--predictions", str(csv), "--min-confidence", "0.5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"would write: {songs['a.mp3']}: (none) -> Rock (0.90)" in out
    assert f"skip: {songs['c.ogg']}: confidence 0.20 is under --min-confidence 0.50" in out
    assert out[-1] == "tag dry run: 2 to write, 1 kept, 1 skipped; nothing written (--apply writes them)"
    assert {name: path.read_bytes() for name, path in songs.items()} == before  # a dry run writes nothing

    assert main(["tag", str(library), "--predictions", str(csv), "--apply"]) == 0  # unknown: skipped
    last = capsys.readouterr().out.splitlines()[-1]
    journal = next((tmp_path / "predictions.parts").glob("tag-journal-*.jsonl"))
    assert last == (f"tagged 2 file(s), 0 left as they were, 1 kept, 1 skipped; journal {journal} "
                    f"(undo: genreflow tag --undo {journal})")
    assert [read_genre(str(songs[n]))[0] for n in ("a.mp3", "b.flac", "c.ogg", "d.flac")] == \
        [["Rock"], ["Pop"], None, ["Jazz"]]
    assert [json.loads(line)["new"] for line in journal.read_text().splitlines()] == [["Rock"], ["Pop"]]
    assert {name: payload_hash(path) for name, path in songs.items()} == payloads

    assert main(["tag", "--undo", str(journal)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"restored 2 file(s) from {journal}")
    assert {name: path.read_bytes() for name, path in songs.items()}["a.mp3"] == before["a.mp3"]
    assert [read_genre(str(p))[0] for p in songs.values()] == [None, None, None, ["Jazz"]]


def test_tag_a_library_predicts_it_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    library = tmp_path / "library"
    library.mkdir()
    for i in range(2):
        write_music(library / f"{i}.wav", 2.0, 8000, i)  # wav: predicted, but no genre tag to write
    flac = library / "song.flac"
    make_audio(flac)
    model = save_model(tmp_path / "models" / "run-tag", "genreflow")
    out = tmp_path / "table.parquet"
    args = ["tag", str(library), "--model", str(model), "--out", str(out), "--min-confidence", "0"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "3 files: 3 predicted, 0 failed (model run-tag)" in printed and "first run: 3 predicted" in printed
    assert "would write: " + str(flac) in printed and "skip: " + str(library / "0.wav") + ": no genre tag for .wav" \
        in printed
    assert out.is_file() and read_genre(str(flac))[0] is None
    assert main([*args, "--apply"]) == 0
    printed = capsys.readouterr().out
    assert "3 unchanged; 0 predicted, 3 reused" in printed  # the table run kept up: nothing predicted again
    genre = pd.read_parquet(out).set_index("path").loc[str(flac), "genre_1"]
    assert read_genre(str(flac))[0] == [genre]
    # the tag write changed the file's size and mtime, not its audio: the next run reuses its row
    assert main(["predict", str(library), "--model", str(model), "--out", str(out)]) == 0
    assert "since the last run: 0 added, 0 removed, 0 modified, 3 unchanged; 0 predicted, 3 reused" in \
        capsys.readouterr().out


def test_tag_needs_something_to_tag(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tag"]) == 2
    assert "genreflow tag needs a LIBRARY, a --predictions TABLE, or --undo JOURNAL" in capsys.readouterr().err
