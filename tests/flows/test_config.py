"""The configuration model, config files and the CLI flags generated from it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from genreflow.flows.cli import build_parser, config_from_args, main
from genreflow.flows.config import DEMO_EPOCHS, STAGES, Config, ConfigError, build_config, leaf_fields


def test_defaults_are_the_seeds_values() -> None:
    config = Config()
    audio = config.audio
    assert (audio.sample_rate, audio.n_mels, audio.n_fft, audio.hop_length) == (22050, 128, 2048, 512)
    assert audio.clip_seconds == 10 and audio.frames == 431 and audio.clip_samples == 220500
    assert config.augment.names() == ["stretch0.8", "stretch0.9", "pitch+2", "pitch-2"]
    assert config.train.batch_size == 64 and config.train.learning_rate == 1e-3
    assert build_config(None, source="folder", input="x").train.epochs == 100


def test_demo_source_caps_epochs_unless_they_are_given() -> None:
    assert Config().train.epochs == DEMO_EPOCHS
    assert build_config(None, epochs=40).train.epochs == 40


def test_every_leaf_field_is_a_cli_flag() -> None:
    parser = build_parser()
    rebuild = parser._subparsers._group_actions[0].choices["rebuild"]  # type: ignore[union-attr]
    flags = {opt for action in rebuild._actions for opt in action.option_strings}
    for name in leaf_fields():
        assert f"--{name.replace('_', '-')}" in flags


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    config_file = tmp_path / "genreflow.toml"
    config_file.write_text('[train]\nepochs = 7\nbatch_size = 32\n[run]\nshard_size = 20\n')
    args = build_parser().parse_args(["rebuild", "--config", str(config_file), "--epochs", "3",
                                      "--clips-per-track", "1", "--time-stretch", "0.9"])
    config = config_from_args(args)
    assert (config.train.epochs, config.train.batch_size, config.run.shard_size) == (3, 32, 20)
    assert config.audio.clips_per_track == 1 and config.augment.time_stretch == [0.9]
    none = config_from_args(build_parser().parse_args(["rebuild", "--clips-per-track", "all"]))
    assert none.audio.clips_per_track is None


def test_yaml_and_json_files_load(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("source:\n  source: folder\n  input: /music\n")
    (tmp_path / "c.json").write_text(json.dumps({"audio": {"clips_per_track": 1}}))
    for name in ("c.yaml", "c.json"):
        args = build_parser().parse_args(["rebuild", "--config", str(tmp_path / name)])
        assert isinstance(config_from_args(args), Config)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "-1"], "train.epochs"),
        (["--shard-size", "0"], "run.shard_size"),
        (["--time-stretch", "9"], "time-stretch rate 9"),
        (["--dask-address", "localhost"], "scheduler address"),
        (["--from-stage", "report", "--to-stage", "decode"], "comes after"),
        (["--val-fraction", "0.45", "--test-fraction", "0.45"], "leave tracks for training"),
    ],
)
def test_invalid_values_are_one_clear_line(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_args(build_parser().parse_args(["rebuild", *argv]))


def test_unknown_choices_are_refused_by_the_parser(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--source", "spotify"], ["--from-stage", "mix"]):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(["rebuild", *argv])
        assert exit_info.value.code == 2
        assert "invalid choice" in capsys.readouterr().err


def test_bad_config_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="cannot read config file"):
        config_from_args(build_parser().parse_args(["rebuild", "--config", str(missing)]))
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\nepochs=")
    with pytest.raises(ConfigError, match="not valid toml"):
        config_from_args(build_parser().parse_args(["rebuild", "--config", str(broken)]))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[training]\nepochs = 3\n")
    with pytest.raises(ConfigError, match="unknown config section"):
        config_from_args(build_parser().parse_args(["rebuild", "--config", str(unknown)]))
    typo = tmp_path / "typo.toml"
    typo.write_text("[train]\nepoch = 3\n")
    with pytest.raises(ConfigError, match=r"train\.epoch"):
        config_from_args(build_parser().parse_args(["rebuild", "--config", str(typo)]))


def test_cli_prints_one_line_and_no_traceback_before_any_work(tmp_path: Path) -> None:
    root = tmp_path / "root"
    result = subprocess.run([sys.executable, "-m", "genreflow.flows.cli", "rebuild", "--data-root", str(root),
                             "--batch-size", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "genreflow: error: invalid configuration: train.batch_size" in result.stderr
    assert "Traceback" not in result.stderr and not root.exists()


def test_stage_selection() -> None:
    config = build_config(None, from_stage="train", to_stage="evaluate")
    assert config.stages_to_run() == list(STAGES[: STAGES.index("evaluate") + 1])
    assert not config.forced("stats") and config.forced("train") and config.forced("report")


def test_main_reports_user_errors_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["status", "--data-root", str(tmp_path / "empty")])
    assert code == 0 and "nothing ingested yet" in capsys.readouterr().out
    code = main(["predict", str(tmp_path / "x.mp3"), "--data-root", str(tmp_path / "empty")])
    assert code == 1 and "no promoted model" in capsys.readouterr().err


def test_missing_input_and_unwritable_root_fail_before_any_work(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["rebuild", "--source", "folder", "--input", str(tmp_path / "nowhere"),
                 "--data-root", str(tmp_path / "root")])
    assert code == 2 and "--input" in capsys.readouterr().err and not (tmp_path / "root").exists()
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code = main(["rebuild", "--data-root", str(blocker / "root")])
    err = capsys.readouterr().err
    assert code == 1 and "not writable" in err and str(blocker) in err


def test_seed_recipe_is_the_seed_projects_exactly() -> None:
    config = build_config(None, recipe="seed")
    assert config.audio.clips_per_track == 1  # the first 10 s of each track
    assert config.augment.names() == ["stretch0.8", "stretch0.9", "pitch+2", "pitch-2"]
    assert config.train.knobs() == {"batch_norm": False, "time_pooling": False, "spec_augment": False,
                                    "mixup": 0.0, "label_smoothing": 0.0, "lr_schedule": "constant",
                                    "class_weights": False, "crop_seconds": 0.0}


def test_augmentation_domain_follows_the_recipe_unless_given() -> None:
    """The default makes its copies from spectra; the seed's recipe keeps the seed's waveform copies."""
    assert build_config(None).augment.augment_domain == "spectral"
    assert build_config(None, recipe="seed").augment.augment_domain == "waveform"
    assert build_config(None, recipe="seed", augment_domain="spectral").augment.augment_domain == "spectral"
    parsed = config_from_args(build_parser().parse_args(["rebuild", "--augment-domain", "waveform"]))
    assert parsed.augment.augment_domain == "waveform" and parsed.augment.domain == "waveform"
    with pytest.raises(ConfigError, match=r"augment\.augment_domain"):
        build_config(None, augment_domain="fourier")


def test_a_knob_or_field_given_overrides_the_recipe() -> None:
    config = build_config(None, recipe="seed", mixup=0.2, clips_per_track=3, pitch_shift=[])
    assert config.train.knobs()["mixup"] == 0.2 and config.train.knobs()["batch_norm"] is False
    assert config.audio.clips_per_track == 3 and config.augment.names() == ["stretch0.8", "stretch0.9"]
    args = build_parser().parse_args(["rebuild", "--recipe", "seed", "--batch-norm", "on", "--folds", "5"])
    parsed = config_from_args(args)
    assert parsed.train.knobs()["batch_norm"] is True and parsed.train.folds == 5
    assert build_config(parsed.model_dump(mode="json")) == parsed, "a dumped configuration reloads unchanged"


def test_knobs_that_resolve_alike_train_the_same_run(tmp_path: Path) -> None:
    import pandas as pd

    from genreflow.flows.plan import plan_shards, train_spec

    tracks = pd.DataFrame({"track_id": ["a"], "path": [str(tmp_path / "a.mp3")], "genre": ["Rock"],
                           "split": ["train"], "artist": [None], "shard": ["train-0000"]})
    plain = build_config(None, source="folder", input="x")
    spelled = build_config(None, source="folder", input="x", batch_norm=True, folds=3, baseline=False)
    other = build_config(None, source="folder", input="x", batch_norm=False)
    name = train_spec(plan_shards(tracks, plain), plain).key
    assert train_spec(plan_shards(tracks, spelled), spelled).key == name
    assert train_spec(plan_shards(tracks, other), other).key != name


@pytest.mark.parametrize("argv", [["rebuild", "--recipe", "best"], ["rebuild", "--folds", "1"],
                                  ["rebuild", "--batch-norm", "maybe"], ["rebuild", "--mixup", "-1"],
                                  ["rebuild", "--recipe", "seed", "--crop-seconds", "3"],
                                  ["rebuild", "--crop-seconds", "12"]])
def test_bad_recipe_values_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's own refusals
        code = exit_info.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("genreflow") and ": error: " in err


def test_a_relative_predict_work_root_is_absolute_for_the_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    """The library flow hands its work root to Dask workers, whose working folder is their own (issue 20)."""
    from genreflow.flows.config import PredictOptions

    monkeypatch.chdir(tmp_path)
    options = PredictOptions(inputs=["a.mp3"], model_dir="m", out="lib/predictions.parquet")
    assert options.work_root == str(tmp_path / "lib" / "predictions.parts")
    assert PredictOptions(inputs=["a.mp3"], model_dir="m", work="parts").work_root == str(tmp_path / "parts")
