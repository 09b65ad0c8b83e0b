"""Issue 6.2: bad metadata through the CLI: a documented skip, or one clear error naming file, line and column.

The rules (tasks/ingest.py, README "Sources"): a listed file that is missing or
a row without a genre is skipped with a warning and quarantined; any other
genre name is a label like the rest (a genre too small to split stays in
training, with a warning); a duplicate id, a malformed line, a bad cell or a
missing column stops the run before any shard is written. tests/tasks/test_ingest.py
checks each message on the source classes; here they go through ``genreflow``.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from genreflow.flows.cli import main
from tests.tasks.collection_files import FMA_ROWS, touch, write_fma_tracks

pytestmark = pytest.mark.timeout(600)


def demo_rows(demo_dir: Path) -> list[str]:
    """``path,genre`` lines for every demo track, by absolute path."""
    return [f"{path},{path.parent.name}" for path in sorted(demo_dir.glob("*/*.mp3"))]


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_missing_files_and_empty_genres_are_skipped_and_quarantined(
    tmp_path: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    typo = tmp_path / "extra" / "typo.mp3"
    typo.parent.mkdir()
    shutil.copy(sorted(demo_dir.glob("Rock/*.mp3"))[0], typo)
    labels = tmp_path / "labels.csv"
    labels.write_text("\n".join(["path,genre", *demo_rows(demo_dir), f"{tmp_path}/gone.mp3,Rock",
                                 f"{demo_dir}/Pop/pop-0000.mp3 ,", f"{typo},Rokc"]).replace(
        f"{demo_dir}/Pop/pop-0000.mp3,Pop\n", "") + "\n")
    root = tmp_path / "root"
    with caplog.at_level(logging.WARNING):
        code, err = run_main(["preprocess", "--source", "csv", "--input", str(labels), "--data-root", str(root),
                              "--to-stage", "decode", "--workers", "1", "--shard-size", "8"], capsys)
    assert code == 0, err
    quarantine = pd.read_parquet(root / "quarantine.parquet").set_index("path")
    assert quarantine.loc[f"{tmp_path}/gone.mp3", "reason"] == "audio file missing"
    assert quarantine.loc[f"{demo_dir}/Pop/pop-0000.mp3", "reason"] == "no genre"
    assert set(quarantine["stage"]) == {"ingest"} and len(quarantine) == 2
    assert "skipped 1 of 26 tracks (audio file missing)" in caplog.text
    assert "skipped 1 of 26 tracks (no genre)" in caplog.text
    tracks = pd.read_parquet(root / "tracks.parquet")
    assert len(tracks) == 24  # 23 demo tracks + the typo
    typo_row = tracks[tracks["genre"] == "Rokc"]
    assert len(typo_row) == 1 and typo_row["split"].item() == "train"  # too small to split: kept for training
    warning = next(line for line in caplog.text.splitlines() if "too few tracks (or artists)" in line)
    assert "no val track for" in warning and "'Rokc'" in warning


def _fma_root(tmp_path: Path, drop: tuple = (), rows: list | None = None) -> Path:
    root = tmp_path / "fma"
    write_fma_tracks(root / "fma_metadata" / "tracks.csv", rows or FMA_ROWS, drop=drop)
    touch(root / "fma_small" / "000" / "000002.mp3")
    return root


# (name, source, file to write (relative name, text) or an FMA builder, expected message fragments)
CSV_ERRORS = [
    ("duplicate id", "labels.csv", "path,genre\na.mp3,Rock\nb.mp3,Pop\na.mp3,Jazz\n",
     ["labels.csv, line 4: duplicate track id 'a'", "first on line 2"]),
    ("wrong field count", "labels.csv", "path,genre\na.mp3,Rock\nb.mp3,Pop,extra\n",
     ["labels.csv, line 3: expected 2 fields"]),
    ("unclosed quote", "labels.csv", 'path,genre\na.mp3,Rock\n"b.mp3,Pop\n', ["labels.csv, line", "unparsable CSV"]),
    ("bad split cell", "labels.csv", "path,genre,split\na.mp3,Rock,train\nb.mp3,Pop,holdout\n",
     ["labels.csv, line 3, column split: 'holdout'"]),
    ("seed id not a number", "music_analysis.csv", "file_name,genre\n2,Hip-Hop\nabc,Rock\n",
     ["music_analysis.csv, line 3, column file_name: 'abc'"]),
    ("no genre column", "labels.csv", "path,style\na.mp3,Rock\n", ["labels.csv, line 1: header must be"]),
    ("not UTF-8", "labels.csv", b"path,genre\na.mp3,Rock\xff\n", ["labels.csv: not UTF-8 text"]),
]


@pytest.mark.parametrize(("name", "file_name", "text", "expected"), CSV_ERRORS, ids=[c[0] for c in CSV_ERRORS])
def test_malformed_label_csv_is_one_error_naming_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, file_name: str, text: str | bytes,
    expected: list[str],
) -> None:
    labels = tmp_path / file_name
    for audio in ("a.mp3", "b.mp3"):
        touch(tmp_path / audio)
    touch(tmp_path / "fma_small" / "000" / "000002.mp3")
    labels.write_bytes(text if isinstance(text, bytes) else text.encode())
    root = tmp_path / "root"
    code, err = run_main(["preprocess", "--source", "csv", "--input", str(labels), "--audio",
                          str(tmp_path / "fma_small"), "--data-root", str(root), "--workers", "1"], capsys)
    assert code == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"genreflow: error: file {labels}"), last
    for fragment in expected:
        assert fragment in last, (name, last)
    assert "Traceback" not in err
    assert not (root / "tracks.parquet").exists()


def test_fma_tracks_csv_without_a_needed_column_names_file_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fma = _fma_root(tmp_path, drop=(("track", "genre_top"),))
    root = tmp_path / "root"
    code, err = run_main(["preprocess", "--source", "fma", "--input", str(fma), "--data-root", str(root),
                          "--workers", "1"], capsys)
    assert code == 1 and "Traceback" not in err
    tracks_csv = fma / "fma_metadata" / "tracks.csv"
    assert err.strip().splitlines()[-1] == f"genreflow: error: file {tracks_csv}: missing column track.genre_top"
    assert not (root / "tracks.parquet").exists()


def test_fma_unknown_split_value_names_line_and_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [(2, "small", "training", "Hip-Hop", 1), (3, "small", "practice", "Rock", 2)]
    fma = _fma_root(tmp_path, rows=rows)
    code, err = run_main(["preprocess", "--source", "fma", "--input", str(fma), "--data-root",
                          str(tmp_path / "root"), "--workers", "1"], capsys)
    assert code == 1
    assert "line 5, column set.split: 'practice'" in err.strip().splitlines()[-1]


def test_unreadable_input_folder_is_one_line_before_any_work(
    tmp_path: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cases = ((blocker / "music", "no such path"), (blocker, "--source folder needs a folder, this is a file"))
    for path, message in cases:
        code, err = run_main(["preprocess", "--source", "folder", "--input", str(path), "--data-root", str(root)],
                             capsys)
        assert code == 2 and err.strip() == f"genreflow: error: --input {path}: {message}"
    code, err = run_main(["preprocess", "--source", "csv", "--input", str(demo_dir), "--data-root", str(root)],
                         capsys)
    assert code == 2 and "--source csv needs a CSV file, this is a folder" in err

    # root reads every folder, so unreadability is simulated where the permission check asks
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: str(p) != str(demo_dir) and real_access(p, mode, **kw))
    code, err = run_main(["preprocess", "--source", "folder", "--input", str(demo_dir), "--data-root", str(root)],
                         capsys)
    assert code == 2 and err.strip() == f"genreflow: error: --input {demo_dir}: not readable"
    assert not root.exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes everything; see the tests above and below")
def test_permission_denied_folders(tmp_path: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    shutil.copytree(demo_dir, locked)
    locked.chmod(0)
    try:
        code, err = run_main(["preprocess", "--source", "folder", "--input", str(locked), "--data-root",
                              str(tmp_path / "root")], capsys)
        assert code == 2 and "not readable" in err
    finally:
        locked.chmod(0o755)
    read_only = tmp_path / "ro"
    read_only.mkdir(mode=0o555)
    code, err = run_main(["preprocess", "--data-root", str(read_only)], capsys)
    assert code == 1 and "not writable" in err


def test_data_root_that_cannot_be_written_is_one_line_before_any_work(
    tmp_path: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for command in ("rebuild", "preprocess", "train", "evaluate"):
        code, err = run_main([command, "--source", "folder", "--input", str(demo_dir), "--data-root",
                              str(blocker / "root")], capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"genreflow: error: data root {blocker}/root is not writable")
