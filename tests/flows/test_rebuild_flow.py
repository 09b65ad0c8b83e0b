"""The whole DAG on a small demo set: it learns, reports, caches training and predicts."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from genreflow.flows.config import Config
from genreflow.flows.rebuild import run_command
from tests.flows.conftest import DEMO_SECONDS, small_config

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]

TRACKS_PER_GENRE = 8
# New demo tracks that predict must not call unknown, at least (issue 23; measured: see the test).
MUSIC_KNOWN = 0.75


@pytest.fixture(scope="module")
def learnable_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from genreflow.tasks.sources.demo_synth import generate_demo_set

    folder = tmp_path_factory.mktemp("demo-learn")
    generate_demo_set(folder, tracks_per_genre=TRACKS_PER_GENRE, seed=11, seconds=DEMO_SECONDS)
    return folder


def rebuild_config(root: Path, demo: Path, **overrides: object) -> Config:
    # A quarter of the tracks is held out for test (by hash: about 16), so accuracy is measured on enough tracks.
    values: dict[str, object] = {"shard_size": 16, "test_fraction": 0.25, "val_fraction": 0.125, "epochs": 12,
                                 "patience": 4}
    return small_config(root, demo, **{**values, **overrides})


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory: pytest.TempPathFactory, learnable_demo: Path) -> tuple[Config, dict]:
    config = rebuild_config(tmp_path_factory.mktemp("root"), learnable_demo)
    return config, run_command("rebuild", config)


def test_rebuild_learns_the_demo_genres(rebuilt: tuple[Config, dict]) -> None:
    config, outcome = rebuilt
    metrics = outcome["metrics"]
    tracks = pd.read_parquet(Path(config.run.data_root) / "tracks.parquet")
    assert metrics["n_tracks"] == (tracks["split"] == "test").sum() >= 8 and metrics["chance"] == pytest.approx(1 / 8)
    assert metrics["track_accuracy"] >= 0.9, metrics
    assert metrics["top2_accuracy"] >= metrics["track_accuracy"]
    assert not outcome["train"]["skipped"] and outcome["train"]["epochs_run"] >= 1


def test_the_last_log_line_sets_the_cnn_beside_the_baseline(rebuilt: tuple[Config, dict]) -> None:
    from genreflow.flows.rebuild import result_line

    _, outcome = rebuilt
    line = result_line(outcome)
    assert f"track {outcome['metrics']['track_accuracy']:.3f}" in line
    assert f"MFCC + SVM track {outcome['baseline']['track_accuracy']:.3f}" in line
    assert line.endswith(f"report in {outcome['report']['dir']}")


def test_report_files_hold_the_metrics(rebuilt: tuple[Config, dict]) -> None:
    config, outcome = rebuilt
    report = Path(outcome["report"]["dir"])
    for name in ("report.md", "report.html", "metrics.json", "confusion.png", "curves.png",
                 "predictions.parquet"):
        assert (report / name).is_file(), name
    saved = json.loads((report / "metrics.json").read_text())
    assert saved["metrics"]["track_accuracy"] == pytest.approx(outcome["metrics"]["track_accuracy"])
    assert f"{outcome['metrics']['track_accuracy']:.3f}" in (report / "report.md").read_text()
    predictions = pd.read_parquet(report / "predictions.parquet")
    assert len(predictions) == outcome["metrics"]["n_clips"] and set(predictions["split"]) == {"test"}
    model_dir = Path(config.run.data_root) / "models" / outcome["train"]["run"]
    history = pd.read_csv(model_dir / "history.csv")
    assert list(history["epoch"]) == list(range(1, len(history) + 1))


def test_unchanged_rerun_skips_training_and_from_stage_retrains(rebuilt: tuple[Config, dict]) -> None:
    config, first = rebuilt
    again = run_command("rebuild", config)
    assert again["train"]["skipped"] and again["train"]["run"] == first["train"]["run"]
    assert again["metrics"]["track_accuracy"] == pytest.approx(first["metrics"]["track_accuracy"])
    forced = config.model_copy(update={"run": config.run.model_copy(update={"from_stage": "evaluate"})})
    evaluated = run_command("evaluate", forced)
    assert evaluated["train"]["skipped"]


def test_predict_names_the_genre_of_new_demo_tracks(rebuilt: tuple[Config, dict], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from genreflow.flows.cli import main
    from genreflow.tasks.sources.demo_synth import DEMO_GENRES, generate_demo_set

    config, _ = rebuilt
    fresh = tmp_path / "fresh"
    generate_demo_set(fresh, tracks_per_genre=1, seed=999, seconds=25.0)
    broken = fresh / "broken.mp3"
    broken.write_text("not audio")
    code = main(["predict", str(fresh), "--format", "csv", "--data-root", config.run.data_root])
    captured = capsys.readouterr()
    assert code == 0
    table = pd.read_csv(__import__("io").StringIO(captured.out))
    good = table[table["error"].isna()]
    assert len(good) == len(DEMO_GENRES)
    truth = good["path"].map(lambda p: Path(p).parent.name)
    assert (good["genre_1"] == truth).mean() >= 0.75
    assert "broken.mp3" in captured.err


def test_predict_says_unknown_for_speech_and_noise_and_not_for_music(
        rebuilt: tuple[Config, dict], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 23: the open-set rule saved with the model (a threshold chosen on validation and a novelty
    reference of the training tracks) makes predict's ``genre`` ``unknown`` for espeak-ng speech and white and
    pink noise, and not for new demo tracks; each half is applied exactly as saved, and the flags move them."""
    import io
    import os

    from genreflow.bench.open_set import SpeechUnavailable, make_non_music
    from genreflow.flows.cli import main
    from genreflow.model.files import NOVELTY_FILE, OPEN_SET_FILE
    from genreflow.model.open_set import MIN_CORRECT
    from genreflow.tasks.sources.demo_synth import generate_demo_set

    config, outcome = rebuilt
    model = Path(config.run.data_root) / "models" / outcome["train"]["run"]
    saved = json.loads((model / OPEN_SET_FILE).read_text())
    assert saved["validation_tracks"] == outcome["metrics"]["validation"]["n_tracks"] >= 1
    # a threshold needs 20 correct validation tracks (this collection has fewer): the novelty half decides
    assert (saved["threshold"] is None) == (saved["validation_correct"] < MIN_CORRECT), saved
    assert saved["novelty"]["cut"] > 0 and saved["novelty"]["reference_tracks"] >= 2
    assert (model / NOVELTY_FILE).is_file()
    open_set = outcome["metrics"]["open_set"]
    assert open_set["threshold"] == saved["threshold"] and open_set["novelty"]["cut"] == saved["novelty"]["cut"]
    assert (Path(outcome["report"]["dir"]) / "open_set.png").is_file()
    try:
        noise = make_non_music(tmp_path / "non-music", per_kind=2, seconds=DEMO_SECONDS,
                               kinds=("speech", "white noise", "pink noise"))
    except SpeechUnavailable:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    music = tmp_path / "music"
    generate_demo_set(music, tracks_per_genre=1, seed=999, seconds=DEMO_SECONDS)
    paths = [str(p) for kind in noise.values() for p in kind] + [str(music)]

    def predict(*flags: str) -> pd.DataFrame:
        assert main(["predict", *paths, "--format", "csv", "--model", str(model), *flags]) == 0
        return pd.read_csv(io.StringIO(capsys.readouterr().out), keep_default_na=False)

    table = predict()
    assert len(table) == 14 and (table["error"] == "").all()
    is_music = table["path"].str.startswith(str(music))
    novel = table["novelty"].astype(float) > 1.0
    with capsys.disabled():  # the figures, in the log
        print(table[["path", "prob_1", "novelty"]].to_string())
    # What the issue asks: non-music is unknown, music is not.
    assert (table.loc[~is_music, "genre"] == "unknown").all()
    assert novel[~is_music].all()  # by the novelty half: the CNN is sure of noise, yet it is far from its tracks
    assert (table.loc[is_music, "genre"] != "unknown").mean() >= MUSIC_KNOWN
    # Each half exactly as saved: unknown where the top probability is under the threshold or the novelty over 1.
    threshold = saved["threshold"] if saved["threshold"] is not None else 0.0
    clear = (table["prob_1"] - threshold).abs() > 1e-6  # the CSV rounds to 6 decimals
    under = table["prob_1"] < threshold
    assert ((table["genre"] == "unknown") == (under | novel))[clear].all()
    assert (table.loc[~(under | novel), "genre"] == table.loc[~(under | novel), "genre_1"]).all()
    # The flags move them: --min-confidence the probability half, --max-novelty the novelty half.
    values = sorted(set(table["prob_1"]))
    middle = (values[len(values) // 2 - 1] + values[len(values) // 2]) / 2 if len(values) > 1 else values[0] + 1e-3
    far = float(table["novelty"].astype(float).max()) + 1.0
    again = predict("--min-confidence", f"{min(middle, 1.0):.9f}", "--max-novelty", f"{far}")
    assert ((again["genre"] == "unknown") == (again["prob_1"] < middle)).all()
    assert (predict("--min-confidence", "0", "--max-novelty", f"{far}")["genre"] != "unknown").all()
    only_novelty = predict("--min-confidence", "0")
    assert ((only_novelty["genre"] == "unknown") == novel).all()


def test_the_gate_keeps_a_worse_model_out_and_promote_by_hand_puts_it_in(
        rebuilt: tuple[Config, dict], capsys: pytest.CaptureFixture[str]) -> None:
    """Runs last in this module: it promotes another model and then restores the good one."""
    from genreflow.flows.cli import main
    from genreflow.model.files import resolve_model_dir
    from genreflow.storage.registry import read_registry
    from genreflow.storage.root import DataRoot

    config, first = rebuilt
    root = DataRoot(config.run.data_root)
    good = first["train"]["run"]
    assert first["promotion"]["decision"] == "promoted" and read_registry(root).promoted == good
    one_epoch = rebuild_config(Path(config.run.data_root), Path(config.source.input or ""), epochs=1,
                               promote_tolerance=0.0)
    worse = run_command("rebuild", one_epoch)
    run = worse["train"]["run"]
    assert run != good and worse["metrics"]["track_accuracy"] < first["metrics"]["track_accuracy"]
    decision = worse["promotion"]
    assert decision["decision"] == "rejected" and decision["previous"] == good
    assert decision["previous_metrics"]["track_accuracy"] == pytest.approx(first["metrics"]["track_accuracy"])
    assert read_registry(root).promoted == good
    assert resolve_model_dir(None, config.run.data_root).name == good  # predict keeps the promoted model
    report = (Path(worse["report"]["dir"]) / "report.md").read_text()
    assert "## Promotion" in report and "**rejected**" in report and good in report

    always = one_epoch.model_copy(update={"run": one_epoch.run.model_copy(update={"promote": "always"})})
    assert run_command("rebuild", always)["promotion"]["decision"] == "promoted"
    assert read_registry(root).promoted == run and resolve_model_dir(None, config.run.data_root).name == run

    assert main(["promote", good, "--data-root", config.run.data_root]) == 0
    assert read_registry(root).promoted == good
    assert main(["promote", "--data-root", config.run.data_root]) == 0
    listing = capsys.readouterr().out
    assert f"promoted: {good}" in listing and f"{run}  rejected" in listing and "promoted by hand" in listing
    assert main(["promote", "run-nope", "--data-root", config.run.data_root]) == 1
    assert "no finished model 'run-nope'" in capsys.readouterr().err
