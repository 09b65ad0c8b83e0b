"""The renderer: the report's five files and the cross-validation report, checked for content,
self-containment and escaping; the renderer needs no Prefect and ships its templates."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from genreflow.model.metrics import evaluate_predictions
from genreflow.tasks.reporting.render import (
    HEADLINE,
    artifact_key,
    dataset_summary,
    render_crossval_report,
    render_report,
    summary_markdown,
    summary_table,
)
from tests.tasks.reporting.test_plots import png_pixels

TRICKY = "R&B <Soul>"  # a genre name that HTML must escape
GENRES = ["Rock", "Jazz", TRICKY]
FILES = {"report.md", "report.html", "metrics.json", "confusion.png", "curves.png"}


@pytest.fixture
def metrics() -> dict:
    clips = pd.DataFrame(
        {
            "track_id": [1, 1, 2, 2, 3, 3],
            "clip_index": [0, 1] * 3,
            "genre": ["Rock"] * 2 + ["Jazz"] * 2 + [TRICKY] * 2,
        }
    )
    # Clips: 4 of 6 right; tracks: the Jazz track is taken for Rock, so 2 of 3.
    probs = np.array(
        [[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]]
    )
    return evaluate_predictions(clips, probs, GENRES)[1]


@pytest.fixture
def summary() -> dict:
    tracks = pd.DataFrame(
        {
            "track_id": range(10),
            "genre": ["Rock"] * 4 + ["Jazz"] * 3 + [TRICKY] * 3,
            "split": ["train", "train", "val", "test", "train", "val", "test", "train", "train", "test"],
        }
    )
    quarantine = pd.DataFrame(
        {
            "track_id": [99134, 108925],
            "path": ["fma_small/099/099134.mp3", "fma_small/108/108925.mp3"],
            "genre": ["Rock", TRICKY],
            "reason": ["no audio stream", "decoder error: <EOF> & truncated"],
        }
    )
    clip_counts = pd.DataFrame(
        {
            "split": ["train", "train", "train", "val", "test", "train"],
            "augmentation": ["none", "stretch0.8", "pitch+2", "none", "none", "none"],
            "clips": [10, 10, 10, 4, 6, 5],
        }
    )
    return dataset_summary(tracks, quarantine, clip_counts, ["stretch0.8", "pitch+2"])


@pytest.fixture
def history() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "epoch": [0, 1, 2, 3],
            "accuracy": [0.40, 0.55, 0.63, 0.70],
            "loss": [1.9, 1.4, 1.1, 0.9],
            "val_accuracy": [0.35, 0.50, 0.58, 0.56],
            "val_loss": [2.0, 1.6, 1.3, 1.35],
        }
    )


@pytest.fixture
def files(metrics: dict, history: pd.DataFrame, summary: dict) -> dict[str, bytes]:
    config = {"train": {"epochs": 4, "batch_size": 64}, "run": {"data_root": "/tmp/data"}}
    baseline = {"name": "logreg baseline", "track_accuracy": 0.4321, "macro_f1": 0.3456}
    return render_report("demo-run", metrics, history, summary, config, baseline=baseline)


def test_dataset_summary_known_answer(summary: dict) -> None:
    assert summary["tracks"] == 10
    assert summary["tracks_per_genre_split"] == {
        "Jazz": {"train": 1, "val": 1, "test": 1},
        "R&B <Soul>": {"train": 2, "val": 0, "test": 1},
        "Rock": {"train": 2, "val": 1, "test": 1},
    }
    # Original clips first, then the augmentations in config order; repeated rows add up.
    assert summary["clips"] == {
        "train": {"none": 15, "stretch0.8": 10, "pitch+2": 10},
        "val": {"none": 4},
        "test": {"none": 6},
    }
    assert list(summary["clips"]["train"]) == ["none", "stretch0.8", "pitch+2"]
    assert summary["augmentations"] == ["stretch0.8", "pitch+2"]
    assert summary["quarantined"][0] == {
        "track_id": 99134,
        "path": "fma_small/099/099134.mp3",
        "genre": "Rock",
        "reason": "no audio stream",
    }
    assert json.loads(json.dumps(summary)) == summary


def test_dataset_summary_empty_quarantine() -> None:
    tracks = pd.DataFrame({"track_id": [1], "genre": ["Rock"], "split": ["train"]})
    no_clips = pd.DataFrame(columns=["split", "augmentation", "clips"])
    summary = dataset_summary(tracks, pd.DataFrame(), no_clips, [])
    assert summary["quarantined"] == []
    assert summary["clips"] == {}
    assert summary["tracks_per_genre_split"] == {"Rock": {"train": 1, "val": 0, "test": 0}}
    assert "No track was quarantined." in summary_markdown(summary)


def test_summary_table_and_markdown(summary: dict) -> None:
    assert summary_table(summary) == [
        {"genre": "Jazz", "train": 1, "val": 1, "test": 1, "total": 3},
        {"genre": "R&B <Soul>", "train": 2, "val": 0, "test": 1, "total": 3},
        {"genre": "Rock", "train": 2, "val": 1, "test": 1, "total": 4},
    ]
    text = summary_markdown(summary)
    assert "| genre | train | val | test | total |" in text
    assert "| all | 5 | 2 | 3 | 10 |" in text
    assert "| train | 15 | 10 | 10 | 35 |" in text
    assert "decoder error: <EOF> & truncated" in text


def test_all_files_present(files: dict[str, bytes]) -> None:
    assert set(files) == FILES
    assert all(isinstance(data, bytes) and data for data in files.values())


def test_pngs_are_valid(files: dict[str, bytes]) -> None:
    for name in ("confusion.png", "curves.png"):
        pixels = png_pixels(files[name])
        assert pixels.ndim == 3
        assert pixels.shape[0] > 200 and pixels.shape[1] > 200
        assert pixels.std() > 0  # not a blank canvas


def test_html_is_self_contained_and_escaped(files: dict[str, bytes], metrics: dict) -> None:
    page = files["report.html"].decode("utf-8")
    sources = re.findall(r"""\bsrc\s*=\s*["']?([^"'\s>]*)""", page, flags=re.IGNORECASE)
    assert len(sources) == 2
    assert all(source.startswith("data:image/png;base64,") for source in sources)
    assert not re.search(r"\bhref\s*=", page, flags=re.IGNORECASE)
    assert not re.search(r"<script|<link|@import|url\(", page, flags=re.IGNORECASE)

    assert "demo-run" in page
    for key in ("clip_accuracy", "track_accuracy", "top2_accuracy", "macro_f1", "chance"):
        assert f"{metrics[key]:.3f}" in page
    assert "0.432" in page and "logreg baseline" in page
    assert "no audio stream" in page
    assert "decoder error: &lt;EOF&gt; &amp; truncated" in page
    assert "R&amp;B &lt;Soul&gt;" in page
    assert "<Soul>" not in page and "<EOF>" not in page


def test_markdown_has_the_tables(files: dict[str, bytes], metrics: dict) -> None:
    text = files["report.md"].decode("utf-8")
    assert text.startswith("# genreflow report: demo-run\n")
    assert "| Metric | CNN | logreg baseline |" in text
    assert f"| Track accuracy (mean-probability vote) | {metrics['track_accuracy']:.3f} | 0.432 |" in text
    assert "| Clip accuracy | 0.667 | – |" in text  # the baseline has no clip accuracy
    assert "| genre | precision | recall | F1 | support |" in text
    assert "| true \\ predicted | Rock | Jazz | R&B <Soul> |" in text
    assert "| Track accuracy (mean-probability vote) | 0.667 | 0.432 |" in text
    assert "| Rock | 1 | 0 | 0 |" in text and "| Jazz | 1 | 0 | 0 |" in text  # confusion rows
    assert "| genre | train | val | test | total |" in text
    assert "| split | none | stretch0.8 | pitch+2 | total |" in text
    assert "- stretch0.8" in text
    assert "| 108925 | fma_small/108/108925.mp3 | R&B <Soul> | decoder error: <EOF> & truncated |" in text
    assert "Epochs run: 4" in text
    assert "Best validation accuracy: 0.580 (epoch 2)" in text
    assert "![Confusion matrix heatmap](confusion.png)" in text
    assert "](curves.png)" in text
    assert '```json\n{\n  "train": {\n    "epochs": 4,' in text


def test_metrics_json_parses(files: dict[str, bytes], metrics: dict) -> None:
    document = json.loads(files["metrics.json"])
    assert document["run"] == "demo-run"
    assert document["metrics"] == metrics
    assert document["dataset"]["tracks"] == 10
    assert document["dataset"]["quarantined"] == 2
    assert document["training"]["best_val_accuracy"] == pytest.approx(0.58)
    assert document["baseline"]["name"] == "logreg baseline"


def test_report_without_baseline_or_validation(metrics: dict, summary: dict, history: pd.DataFrame) -> None:
    files = render_report("r", metrics, history[["epoch", "accuracy", "loss"]], summary, {})
    text = files["report.md"].decode("utf-8")
    assert "| Metric | CNN |\n" in text
    assert "Best validation accuracy: –" in text
    assert json.loads(files["metrics.json"])["training"]["best_val_accuracy"] is None


def test_user_strings_are_escaped_for_each_format(metrics: dict, history: pd.DataFrame, summary: dict) -> None:
    files = render_report("<i>run</i> | x", metrics, history, summary, {"note": "<b>"})
    page = files["report.html"].decode("utf-8")
    assert "<title>genreflow report: &lt;i&gt;run&lt;/i&gt; | x</title>" in page
    assert "<i>" not in page and "<b>" not in page
    text = files["report.md"].decode("utf-8")
    # Markdown keeps the raw text; only a pipe, which would break a table, is escaped.
    assert text.startswith("# genreflow report: <i>run</i> \\| x\n")
    assert '"note": "<b>"' in text


def test_markdown_and_html_have_the_same_headings(files: dict[str, bytes]) -> None:
    import html

    text = files["report.md"].decode("utf-8")
    page = files["report.html"].decode("utf-8")
    md_headings = [(len(hashes), title) for hashes, title in re.findall(r"^(#+) (.*)$", text, flags=re.MULTILINE)]
    html_headings = [(int(level), html.unescape(title)) for level, title in re.findall(r"<h(\d)>(.*?)</h\1>", page)]
    assert md_headings == html_headings
    assert (2, "Configuration") in md_headings and (3, "Quarantined tracks (2)") in md_headings


def test_empty_sections_say_so_in_both_formats(metrics: dict, history: pd.DataFrame) -> None:
    tracks = pd.DataFrame({"track_id": [1], "genre": ["Rock"], "split": ["train"]})
    no_clips = pd.DataFrame(columns=["split", "augmentation", "clips"])
    files = render_report("r", metrics, history, dataset_summary(tracks, pd.DataFrame(), no_clips, []), {})
    for name in ("report.md", "report.html"):
        document = files[name].decode("utf-8")
        for sentence in ("No clip counts recorded.", "None.", "No track was quarantined.", "Quarantined tracks (0)"):
            assert sentence in document, (name, sentence)


def test_crossval_report_with_and_without_baseline() -> None:
    def spread(mean: float) -> dict:
        return {"mean": mean, "std": mean / 10, "values": [mean]}

    keys = ("track_accuracy", "macro_f1", "clip_accuracy", "top2_accuracy")
    folds = [
        {"fold": n, "tracks": {"train": 8, "val": 2, "test": 3}, "training": {"epochs_run": 3},
         "cnn": {"track_accuracy": 0.6, "macro_f1": 0.55}, "baseline": {"track_accuracy": 0.5, "macro_f1": 0.4}}
        for n in (2, 1)
    ]
    summary = {"folds": 2, "cnn": {key: spread(0.6) for key in keys},
               "baseline": {"track_accuracy": spread(0.5), "macro_f1": spread(0.4)}}
    files = render_crossval_report("cv <&>", summary, folds, {"a": 1})
    assert set(files) == {"crossval.md", "crossval.html", "crossval.json"}
    text = files["crossval.md"].decode("utf-8")
    assert text.startswith("# genreflow cross-validation: cv <&>\n\n2 track-level folds")
    assert "| Metric (mean ± std over folds) | CNN | MFCC + SVM |" in text
    assert "| Track accuracy | 0.600 ± 0.060 | 0.500 ± 0.050 |" in text
    assert "| Clip accuracy | 0.600 ± 0.060 | – |" in text
    assert text.index("| 1 | 8 / 2 / 3 | 3 | 0.600 | 0.550 | 0.500 | 0.400 |") < text.index("| 2 | 8 / 2 / 3 |")
    assert text.endswith('```json\n{\n  "a": 1\n}\n```\n')
    page = files["crossval.html"].decode("utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert "<h1>genreflow cross-validation: cv &lt;&amp;&gt;</h1>" in page and "<&>" not in page
    assert "<td>0.600 ± 0.060</td>" in page and "MFCC + SVM" in page

    alone = render_crossval_report("cv", {"folds": 2, "cnn": summary["cnn"]}, folds, {})
    assert "| Metric (mean ± std over folds) | CNN |\n" in alone["crossval.md"].decode("utf-8")
    assert b"MFCC + SVM" not in alone["crossval.html"] and b"baseline" not in alone["crossval.md"]


def test_templates_ship_with_the_package() -> None:
    from fnmatch import fnmatch
    from importlib.resources import files as package_files
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")
    names = {entry.name for entry in (package_files("genreflow.tasks.reporting") / "templates").iterdir()}
    assert {"report.md.j2", "report.html.j2", "crossval.md.j2", "crossval.html.j2", "dataset.md.j2"} <= names
    # Installed from a wheel too, not only from this editable checkout: package-data must cover every file.
    pyproject = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["genreflow.tasks.reporting"]
    assert all(any(fnmatch(f"templates/{name}", pattern) for pattern in patterns) for name in names)


def test_crossval_report_with_two_families_shows_the_chosen_one() -> None:
    def spread(mean: float) -> dict:
        return {"mean": mean, "std": 0.1, "values": [mean]}

    folds = [{"fold": 1, "tracks": {"train": 8, "val": 2, "test": 3}, "training": {"epochs_run": 3},
              "cnn": {"track_accuracy": 0.6, "macro_f1": 0.55}, "embedding": {"track_accuracy": 0.9, "macro_f1": 0.85},
              "selection": {"chosen": "embedding"}, "baseline": {"track_accuracy": 0.5, "macro_f1": 0.4}}]
    summary = {"folds": 1, "cnn": {"track_accuracy": spread(0.6)}, "embedding": {"track_accuracy": spread(0.9)},
               "chosen": {"track_accuracy": spread(0.9)}, "baseline": {"track_accuracy": spread(0.5)}}
    text = render_crossval_report("cv", summary, folds, {})["crossval.md"].decode("utf-8")
    assert "| Metric (mean ± std over folds) | CNN | Embedding | Chosen on validation | MFCC + SVM |" in text
    assert "| Track accuracy | 0.600 ± 0.100 | 0.900 ± 0.100 | 0.900 ± 0.100 | 0.500 ± 0.100 |" in text
    assert "| 1 | 8 / 2 / 3 | 3 | 0.600 | 0.550 | 0.900 | 0.850 | embedding | 0.500 | 0.400 |" in text


def test_an_embedding_models_report_has_no_learning_curves(metrics: dict, summary: dict) -> None:
    model = {"embedder": "MSD_musicnn", "feature": "max_pool", "C": 0.1, "val_track_accuracy": 1.0, "dims": 753}
    files = render_report("emb-1", {**metrics, "family": "embedding"}, pd.DataFrame(), summary, {}, model=model)
    assert "curves.png" not in files and "confusion.png" in files
    text = files["report.md"].decode("utf-8")
    assert "| Metric | musicnn embedding + logistic regression |" in text
    assert "Embedding: musicnn MSD_musicnn (max_pool), 753 dimensions" in text and "curves.png" not in text


def test_a_promotion_shows_the_metrics_it_compared(metrics: dict, history: pd.DataFrame, summary: dict) -> None:
    from genreflow.tasks.promote import COMPARED  # the promote stage's summary holds these and n_tracks

    run_metrics = {key: metrics[key] for key in (*COMPARED, "n_tracks")}
    promotion = {"run": "r2", "previous": "r1", "run_metrics": run_metrics,
                 "previous_metrics": {**run_metrics, "track_accuracy": 0.25}, "decision": "promoted",
                 "reason": "not worse", "promoted": "r2", "policy": "if-better"}
    text = render_report("r2", metrics, history, summary, {}, promotion=promotion)["report.md"].decode("utf-8")
    table = text[text.index("| Metric | This run (r2) | Promoted before (r1), same test tracks |"):]
    rows = table.splitlines()[2:]
    rows = rows[: next(i for i, line in enumerate(rows) if not line.startswith("|"))]
    shown = [line.split(" | ")[0].removeprefix("| ") for line in rows]
    assert shown == [label for key, label in HEADLINE if key in COMPARED]
    assert "| Track accuracy (mean-probability vote) | 0.667 | 0.250 |" in table


def test_the_renderer_imports_no_prefect() -> None:
    """The renderer is plain functions: importing it (and the plots) loads neither Prefect nor TensorFlow."""
    code = ("import sys, genreflow.tasks.reporting.render, genreflow.tasks.reporting.plots; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'prefect', 'tensorflow'}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_artifact_keys_are_lower_case_letters_digits_and_dashes() -> None:
    assert artifact_key("report", "Run_1 (b)") == "genreflow-report-run-1--b-"
    assert artifact_key("crossval", "cv-0a1b2c") == "genreflow-crossval-cv-0a1b2c"


def mistake_rows() -> list[dict]:
    """What tasks.mistakes and tasks.excerpts give the renderer: the Jazz track taken for Rock, one excerpt."""
    top3 = [{"genre": "Rock", "probability": 0.55}, {"genre": "Jazz", "probability": 0.35},
            {"genre": TRICKY, "probability": 0.1}]
    return [{"genre": "Jazz", "track_id": 2, "path": "jazz/<two> | b.mp3", "predicted": "Rock", "confidence": 0.55,
             "true_probability": 0.35, "top3": top3, "clip_index": 1, "excerpt": "excerpts/two-clip1.mp3",
             "offset": 10.0},
            {"genre": TRICKY, "track_id": 3, "path": "rb/3.mp3", "predicted": "Rock", "confidence": 0.4,
             "true_probability": 0.3, "top3": top3, "clip_index": 0, "excerpt": None, "offset": None,
             "excerpt_error": "file not readable: No such file or directory"}]


def test_mistakes_in_each_format(metrics: dict, history: pd.DataFrame, summary: dict) -> None:
    files = render_report("r", metrics, history, summary, {"audio": {"clip_seconds": 10.0}}, mistakes=mistake_rows())
    text = files["report.md"].decode("utf-8")
    section = text[text.index("## Mistakes"):text.index("## Training")]
    assert "| true genre | track | predicted | p(true) | top 3 | window | excerpt |" in section
    assert ("| Jazz | jazz/<two> \\| b.mp3 | Rock (0.550) | 0.350 | Rock 0.550, Jazz 0.350, R&B <Soul> 0.100 "
            "| 0:10–0:20 | [mp3](excerpts/two-clip1.mp3) |") in section
    assert "| – | file not readable: No such file or directory |" in section

    page = files["report.html"].decode("utf-8")
    assert page.count("<audio ") == 1 and 'src="excerpts/two-clip1.mp3"' in page
    assert page.count('<tr class="mistake"') == 2
    # Each confusion cell with rows links to the first of them; genre positions, not names, make the ids.
    assert '<tr class="mistake" id="mistakes-1-0">' in page and '<a href="#mistakes-1-0">1</a>' in page
    assert 'id="mistakes-2-0"' in page and "jazz/&lt;two&gt; | b.mp3" in page
    assert "<two>" not in page

    document = json.loads(files["metrics.json"])
    assert document["mistakes"][0]["path"] == "jazz/<two> | b.mp3"
    assert document["mistakes"][0]["top3"][0] == {"genre": "Rock", "probability": 0.55}


def test_no_mistakes_says_so(metrics: dict, history: pd.DataFrame, summary: dict) -> None:
    files = render_report("r", metrics, history, summary, {}, mistakes=[])
    for name in ("report.md", "report.html"):
        assert "No test track was predicted wrongly." in files[name].decode("utf-8")
    assert "<a href" not in files["report.html"].decode("utf-8")


def test_crossval_report_lists_suspect_labels() -> None:
    folds = [{"fold": 1, "tracks": {"train": 8, "val": 2, "test": 3}, "training": {"epochs_run": 3},
              "cnn": {"track_accuracy": 0.6, "macro_f1": 0.55}}]
    summary = {"folds": 1, "cnn": {"track_accuracy": {"mean": 0.6, "std": 0.0, "values": [0.6]}}}
    issues = [{"rank": 1, "path": "rock/<a>.mp3", "given_genre": "Rock", "suggested_genre": "Jazz",
               "given_probability": 0.01, "suggested_probability": 0.9, "confident_learning": True,
               "track_id": "rock/a", "fold": 1,
               "clip_index": 0, "excerpt": "excerpts/a-clip0.mp3", "offset": 0.0}]
    files = render_crossval_report("cv", summary, folds, {"audio": {"clip_seconds": 10.0}}, label_issues=issues,
                                   n_label_issues=7)
    text = files["crossval.md"].decode("utf-8")
    assert "## Suspect labels" in text and "7 track(s) whose out-of-fold prediction" in text
    assert ("| 1 | rock/<a>.mp3 | Rock | 0.010 | Jazz (0.900) | yes | 1 | 0:00–0:10 | [mp3](excerpts/a-clip0.mp3) |"
            in text)
    page = files["crossval.html"].decode("utf-8")
    assert page.count("<audio ") == 1 and "rock/&lt;a&gt;.mp3" in page
    assert json.loads(files["crossval.json"])["label_issues"]["total"] == 7
    none = render_crossval_report("cv", summary, folds, {}, label_issues=[], n_label_issues=0)
    assert "No track's given genre is in doubt" in none["crossval.md"].decode("utf-8")
    assert "Suspect labels" not in render_crossval_report("cv", summary, folds, {})["crossval.md"].decode("utf-8")


def test_index_links_each_report_and_shows_the_change_per_genre() -> None:
    from genreflow.tasks.reporting.render import render_index

    runs = [{"run": "run-b", "family": "cnn", "date": "2026-12-07T10:00:00+00:00", "tracks": 96,
             "val_track_accuracy": 1.0, "test_track_accuracy": 0.75, "ece": None, "promoted": False,
             "report": "reports/run-b/report.html"},
            {"run": "run-a", "family": "cnn", "date": "2026-12-06T10:00:00+00:00", "tracks": 96,
             "val_track_accuracy": 0.9, "test_track_accuracy": 0.5, "ece": 0.05, "promoted": True, "report": None}]
    changes = [{"run": "run-b", "previous": "run-a", "family": "cnn", "test_set": "abc", "track_accuracy": 0.25,
                "per_genre": {TRICKY: 0.5, "Rock": None}}]
    page = render_index(runs, changes).decode("utf-8")
    assert '<a href="run-b/report.html">run-b</a>' in page and "<td>run-a</td>" in page
    assert page.index("run-b") < page.index("run-a")
    assert "<h3>run-b against run-a</h3>" in page and "track accuracy +0.250" in page
    assert "<td>R&amp;B &lt;Soul&gt;</td><td class=\"num\">+0.500</td>" in page
    assert "No trained run yet" in render_index([], []).decode("utf-8")
