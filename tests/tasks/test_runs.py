"""Runs side by side: what `genreflow runs` and reports/index.html read from a data root."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest

from genreflow.storage.manifest import write_manifest
from genreflow.storage.outputs import manifest_path, output_path
from genreflow.storage.registry import PromotionRecord, record_decision
from genreflow.storage.root import DataRoot
from genreflow.tasks.runs import evaluation_tracks_id, genre_changes, list_runs, runs_lines, write_index


def add_run(root: DataRoot, run: str, finished: str, test_tracks: list[str], recall: dict[str, float],
            val: float = 1.0, family: str = "cnn", report_tracks: int | None = None, **metrics: object) -> None:
    """A finished model and its evaluation (and, with ``report_tracks``, its report) as the stages write them."""
    model = output_path(root, "train", run, "model.keras")
    root.write_bytes(model, b"model")
    sealed = write_manifest(root, manifest_path(root, "train", run), name=f"train/{run}", fingerprint="f",
                            files=[model], rows=0)
    path = manifest_path(root, "train", run)
    root.write_bytes(path, sealed.model_copy(update={"created_at": finished}).model_dump_json().encode())
    per_genre = {genre: {"recall": value, "support": 1} for genre, value in recall.items()}
    accuracy = sum(recall.values()) / len(recall)
    root.write_json(output_path(root, "evaluate", run, "evaluation.json"),
                    {"family": family, "track_accuracy": accuracy, "validation": {"track_accuracy": val},
                     "per_genre": per_genre, **metrics})
    root.write_parquet(output_path(root, "evaluate", run, "predictions.parquet"),
                       pd.DataFrame({"track_id": test_tracks, "clip_index": 0}))
    if report_tracks is not None:
        root.write_json(output_path(root, "report", run, "metrics.json"), {"dataset": {"tracks": report_tracks}})
        root.write_bytes(output_path(root, "report", run, ".html"), b"<html></html>")


@pytest.fixture
def root(tmp_path: Path) -> DataRoot:
    root = DataRoot(str(tmp_path / "data"))
    add_run(root, "run-old", "2026-12-01T02:00:00+00:00", ["a", "b"], {"Rock": 0.5, "Jazz": 1.0}, report_tracks=40)
    add_run(root, "run-new", "2026-12-08T02:00:00+00:00", ["b", "a"], {"Rock": 1.0, "Jazz": 0.5}, val=0.9,
            report_tracks=42, ece=0.042)
    add_run(root, "emb-new", "2026-12-08T02:01:00+00:00", ["a", "b"], {"Rock": 1.0, "Jazz": 1.0}, family="embedding")
    add_run(root, "run-other", "2026-12-04T02:00:00+00:00", ["c"], {"Rock": 0.0})  # another test set
    root.write_bytes(output_path(root, "train", "cv-1/fold-1", "model.keras"), b"fold")  # not a run
    record_decision(root, PromotionRecord(run="run-old", decision="promoted", reason="first", policy="if-better"))
    return root


def test_runs_newest_first_with_their_numbers(root: DataRoot) -> None:
    runs = list_runs(root)
    assert [r["run"] for r in runs] == ["emb-new", "run-new", "run-other", "run-old"]
    new = runs[1]
    assert new == {"run": "run-new", "family": "cnn", "date": "2026-12-08T02:00:00+00:00", "tracks": 42,
                   "val_track_accuracy": 0.9, "test_track_accuracy": 0.75, "ece": 0.042, "promoted": False,
                   "report": "reports/run-new/report.html", "test_set": evaluation_tracks_id(["a", "b"]),
                   "per_genre": {"Rock": 1.0, "Jazz": 0.5}}
    assert [r["promoted"] for r in runs] == [False, False, False, True]
    assert runs[0]["family"] == "embedding" and runs[0]["tracks"] is None and runs[0]["ece"] is None


def test_changes_pair_runs_of_one_family_on_the_same_tracks(root: DataRoot) -> None:
    changes = genre_changes(list_runs(root))
    assert changes == [{"run": "run-new", "previous": "run-old", "family": "cnn",
                        "test_set": evaluation_tracks_id("ab"), "track_accuracy": 0.0,
                        "per_genre": {"Jazz": -0.5, "Rock": 0.5}}]


def test_lines_and_index(root: DataRoot) -> None:
    lines = runs_lines(list_runs(root))
    assert lines[0].split() == ["run", "family", "finished", "tracks", "val", "acc", "test", "acc", "ECE", "promoted"]
    assert lines[2].split() == ["run-new", "cnn", "2026-12-08", "02:00", "42", "0.900", "0.750", "0.042", "no"]
    assert lines[4].split()[-1] == "yes"
    page = Path(write_index(root)).read_text()
    assert page == (Path(root.path) / "reports" / "index.html").read_text()
    assert '<a href="run-new/report.html">run-new</a>' in page and "<h3>run-new against run-old</h3>" in page


def test_the_command(root: DataRoot, capsys: pytest.CaptureFixture[str]) -> None:
    from genreflow.flows.runs import add_runs_arguments, runs_command

    parser = argparse.ArgumentParser()
    add_runs_arguments(parser)
    assert runs_command(parser.parse_args(["--data-root", root.url, "--json"])) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(r["run"], r["promoted"]) for r in listed] == [("emb-new", False), ("run-new", False),
                                                             ("run-other", False), ("run-old", True)]
    assert runs_command(parser.parse_args(["--data-root", str(Path(root.path) / "empty")])) == 0
    assert "no trained run" in capsys.readouterr().out


def test_promote_by_hand_rewrites_the_index(root: DataRoot, capsys: pytest.CaptureFixture[str]) -> None:
    """The index says which run is promoted, so `genreflow promote RUN` rewrites it, not only a rebuild."""
    import re

    from genreflow.flows.cli import main

    def promoted_in_index() -> list[str]:
        page = (Path(root.path) / "reports" / "index.html").read_text()
        rows = re.findall(r"<tr>(.*?)</tr>", page, flags=re.S)
        return [re.search(r">([\w-]+)</a>", row).group(1) for row in rows  # type: ignore[union-attr]
                if re.search(r"<td>yes</td>", row)]

    write_index(root)
    assert promoted_in_index() == ["run-old"]
    assert main(["promote", "run-new", "--data-root", root.url]) == 0
    assert "run-new is now the promoted model" in capsys.readouterr().out
    assert promoted_in_index() == ["run-new"]
