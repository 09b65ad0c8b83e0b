"""Issue 21: every value a user types reaches the configuration; flags, environment, project file and the data
root's recorded configuration in their order; help texts that tell the truth; the usual entry points."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from genreflow.flows.cli import EXIT_OK, build_parser, config_from_args, flag_default, main, sources_from_args
from genreflow.flows.config import (
    DEMO_EPOCHS,
    NOT_RECORDED,
    PROJECT_FILE,
    RECORDED_CONFIG,
    Config,
    ConfigError,
    check_collection_kept,
    config_sources,
    leaf_fields,
    record_config,
)

# A value for every leaf that differs from its default, as typed on the command line, and what it must become.
# Fields that need company to be valid bring it (``extra``). A new field without an entry fails the coverage test.
TYPED: dict[str, tuple[list[str], Any]] = {
    "source": (["folder"], "folder"),
    "input": (["/music/in"], "/music/in"),
    "audio": (["/music/audio"], "/music/audio"),
    "subset": (["medium"], "medium"),
    "tracks_per_genre": (["3"], 3),
    "demo_seed": (["5"], 5),
    "split_seed": (["7"], 7),
    "val_fraction": (["0.2"], 0.2),
    "test_fraction": (["0.15"], 0.15),
    "resplit": (["on"], True),
    "sample_rate": (["16000"], 16000),
    "clip_seconds": (["5"], 5.0),
    "clips_per_track": (["2"], 2),
    "n_mels": (["96"], 96),
    "n_fft": (["1024"], 1024),
    "hop_length": (["256"], 256),
    "time_stretch": (["0.7", "1.1"], [0.7, 1.1]),
    "pitch_shift": (["1", "-1.5"], [1.0, -1.5]),
    "augment_domain": (["waveform"], "waveform"),
    "recipe": (["seed"], "seed"),
    "epochs": (["7"], 7),
    "batch_size": (["16"], 16),
    "learning_rate": (["0.01"], 0.01),
    "patience": (["3"], 3),
    "seed": (["1"], 1),
    "shuffle_buffer": (["64"], 64),
    "batch_norm": (["off"], False),
    "time_pooling": (["off"], False),
    "spec_augment": (["off"], False),
    "mixup": (["0.2"], 0.2),
    "label_smoothing": (["0.1"], 0.1),
    "lr_schedule": (["cosine"], "cosine"),
    "class_weights": (["on"], True),
    "crop_seconds": (["4"], 4.0),
    "folds": (["5"], 5),
    "baseline": (["off"], False),
    "family": (["cnn"], "cnn"),
    "embedding_model": (["MTT_musicnn"], "MTT_musicnn"),
    "embedding_feature": (["penultimate"], "penultimate"),
    "weights_dir": (["/cache/w"], "/cache/w"),
    "data_root": (["/data/gf"], "/data/gf"),
    "shard_size": (["10"], 10),
    "workers": (["3"], 3),
    "dask_address": (["tcp://127.0.0.1:8786"], "tcp://127.0.0.1:8786"),
    "from_stage": (["train"], "train"),
    "to_stage": (["evaluate"], "evaluate"),
    "retries": (["0"], 0),
    "promote": (["never"], "never"),
    "promote_tolerance": (["0.05"], 0.05),
    "evaluate_run": (["run-abc"], "run-abc"),
    "mlflow_uri": (["sqlite:///mlflow.db"], "sqlite:///mlflow.db"),
}
# The words that type None: never "not given".
NONE_WORDS: dict[str, tuple[str, list[str]]] = {
    "clips_per_track": ("all", ["--recipe", "seed"]),  # the seed recipe would otherwise set 1
    "folds": ("off", []),
}
# Fields that are only valid beside others.
COMPANY: dict[str, list[str]] = {"crop_seconds": ["--time-pooling", "on"], "time_pooling": ["--crop-seconds", "0"]}


def value_of(config: Config, name: str) -> Any:
    section = leaf_fields()[name][0]
    return getattr(getattr(config, section), name)


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No GENREFLOW_* variable and no genreflow.toml above the test's folder leaks in."""
    for variable in [v for v in __import__("os").environ if v.startswith("GENREFLOW_")]:
        monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)


def test_the_table_covers_every_field() -> None:
    assert set(TYPED) == set(leaf_fields())


@pytest.mark.parametrize("name", sorted(TYPED))
def test_every_typed_flag_value_reaches_the_configuration(name: str) -> None:
    typed, expected = TYPED[name]
    config = config_from_args(parse(["rebuild", f"--{name.replace('_', '-')}", *typed, *COMPANY.get(name, [])]))
    assert value_of(config, name) == expected


@pytest.mark.parametrize("name", sorted(TYPED))
def test_every_field_is_also_an_environment_variable(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    typed, expected = TYPED[name]
    monkeypatch.setenv(f"GENREFLOW_{name.upper()}", " ".join(typed))
    config = config_from_args(parse(["rebuild", *COMPANY.get(name, [])]))
    assert value_of(config, name) == expected


@pytest.mark.parametrize("name", sorted(NONE_WORDS))
def test_a_typed_none_word_is_a_value_not_a_missing_flag(name: str) -> None:
    """``--folds off`` turns cross-validation off and ``--recipe seed --clips-per-track all`` takes every
    window: the seed recipe's 1 clip no longer wins over what the user typed."""
    word, company = NONE_WORDS[name]
    assert value_of(config_from_args(parse(["rebuild", *company])), name) is not None or name == "folds"
    config = config_from_args(parse(["rebuild", f"--{name.replace('_', '-')}", word, *company]))
    assert value_of(config, name) is None
    assert "clips_per_track" not in NONE_WORDS or config_from_args(
        parse(["rebuild", "--recipe", "seed"])).audio.clips_per_track == 1


def test_a_none_word_of_another_field_is_refused_not_dropped(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["rebuild", "--folds", "all"])
    assert "--folds" in capsys.readouterr().err


def test_precedence_flag_environment_project_file_data_root_default(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / PROJECT_FILE).write_text('[run]\ndata_root = "root"\n[train]\nepochs = 3\nbatch_size = 8\n'
                                         'patience = 4\n[audio]\nn_mels = 64\n')
    record_config(Config.model_validate({"run": {"data_root": str(root)}}),
                  {"epochs": 2, "batch_size": 4, "patience": 2, "n_mels": 32, "n_fft": 1024, "workers": 9}, "rebuild")
    monkeypatch.setenv("GENREFLOW_EPOCHS", "5")
    monkeypatch.setenv("GENREFLOW_BATCH_SIZE", "16")
    sub = tmp_path / "sub" / "deeper"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)  # the project file is found above the working folder
    args = parse(["train", "--epochs", "9"])
    sources = sources_from_args(args, read_recorded=True)
    config = sources.config()
    assert config.run.data_root == str(root)  # the project file's, relative to its own folder
    assert config.train.epochs == 9 and sources.origin("epochs") == "flag"
    assert config.train.batch_size == 16 and sources.origin("batch_size") == "environment"
    assert config.train.patience == 4 and sources.origin("patience") == "project file"
    assert config.audio.n_mels == 64 and sources.origin("n_mels") == "project file"
    assert config.audio.n_fft == 1024 and sources.origin("n_fft") == "data root"
    assert config.run.workers == 2 and sources.origin("workers") == "default"  # run-only: not handed on
    assert "workers" in NOT_RECORDED
    lines = sources.overridden_record()
    assert any(line.startswith("--epochs 9 overrides the data root's recorded epochs 2") for line in lines)
    assert any("$GENREFLOW_BATCH_SIZE" in line for line in lines)
    # rebuild records, it does not read: the data root's values are not its inputs
    assert sources_from_args(parse(["rebuild"]), read_recorded=False).config().audio.n_fft == 2048


def test_a_bad_environment_value_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENREFLOW_EPOCHS", "many")
    with pytest.raises(ConfigError, match=r"\$GENREFLOW_EPOCHS: invalid int value: 'many'"):
        config_sources({})


def test_config_flag_replaces_project_file_discovery(tmp_path: Path) -> None:
    (tmp_path / PROJECT_FILE).write_text("[train]\nepochs = 3\n")
    other = tmp_path / "other.toml"
    other.write_text("[train]\nepochs = 4\n")
    assert config_from_args(parse(["rebuild"])).train.epochs == 3
    assert config_from_args(parse(["rebuild", "--config", str(other)])).train.epochs == 4


def test_status_takes_only_the_flags_that_mean_something_to_it(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("--promote", "--retries", "--workers", "--dask-address", "--from-stage"):
        with pytest.raises(SystemExit):
            parse(["status", flag, "x"])
    assert "unrecognized arguments" in capsys.readouterr().err
    assert parse(["status", "--n-mels", "96", "--json"]).json


def test_help_walk_every_option_has_help_and_true_defaults() -> None:
    """Every subcommand's flags and positionals have help text, and every printed default of a configuration
    flag is the configuration's own."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    leaves = leaf_fields()
    seen = 0
    for command, sub in subparsers.choices.items():
        assert sub.description, command
        helps = {choice.dest: choice.help for choice in subparsers._choices_actions}
        assert helps.get(command), f"{command} has no help line"
        text = sub.format_help()
        has_config_flags = "--config" in sub._option_string_actions
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"{command} {action.option_strings or action.dest}"
            assert action.help.count("(default") <= 1, f"{command} {action.dest}: default printed twice"
            if has_config_flags and action.dest in leaves and action.option_strings:
                seen += 1
                printed = re.search(r"\(default: ([^)]*)\)", action.help)
                assert printed, f"{command} --{action.dest}: no default printed"
                field = leaves[action.dest][1]
                if field.default is None and "(default:" in (field.description or ""):
                    continue  # an unset field whose description says in words what unset means
                if "set by --recipe" not in printed.group(1):
                    assert printed.group(1) == flag_default(action.dest, field), (command, action.dest)
        assert "(default: None)" not in text, command
    assert seen > 100
    assert f"at most {DEMO_EPOCHS}" in leaves["epochs"][1].description


def test_bare_command_prints_help_and_version_and_module(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == EXIT_OK
    assert "COMMAND" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0 and capsys.readouterr().out.startswith("genreflow ")
    done = subprocess.run([sys.executable, "-m", "genreflow", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("genreflow "), done.stderr


def test_verbose_and_quiet_set_prefects_level(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from genreflow.flows.cli import _set_log_level

    monkeypatch.delenv("PREFECT_LOGGING_LEVEL", raising=False)
    _set_log_level(parse(["status", "-q"]))
    assert __import__("os").environ["PREFECT_LOGGING_LEVEL"] == "WARNING"
    _set_log_level(parse(["-v", "status"]))
    assert __import__("os").environ["PREFECT_LOGGING_LEVEL"] == "DEBUG"


def test_completion_script_knows_every_command_and_runs_in_bash(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == EXIT_OK
    script = capsys.readouterr().out
    for command in ("rebuild", "status", "predict", "init", "--clips-per-track"):
        assert command in script
    bash = subprocess.run(["bash", "-c", script + '\nCOMP_WORDS=(genreflow status --n-m); COMP_CWORD=2; _genreflow; '
                                                 'echo "${COMPREPLY[@]}"'], capture_output=True, text=True)
    assert bash.stdout.split() == ["--n-mels"], bash.stderr


def test_init_writes_a_project_file_later_commands_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import tomllib

    import yaml

    assert main(["init", "--source", "folder", "--input", "music", "--epochs", "12"]) == EXIT_OK
    toml = (tmp_path / PROJECT_FILE).read_text()
    assert "# genreflow project settings" in toml and "# n_mels = 128" in toml
    assert tomllib.loads(toml) == {"source": {"source": "folder", "input": "music"}, "train": {"epochs": 12},
                                   "split": {}, "audio": {}, "augment": {}, "run": {}}
    config = config_from_args(parse(["status"]))
    assert (config.source.input, config.train.epochs) == (str(tmp_path / "music"), 12)
    deployment = yaml.safe_load((tmp_path / "prefect.yaml").read_text())["deployments"][0]
    assert deployment["entrypoint"] == "flows/serve.py:scheduled_rebuild"
    assert deployment["parameters"]["config"]["source"]["input"] == str(tmp_path / "music")
    Config.model_validate(deployment["parameters"]["config"])  # a parameter the entry flow accepts
    assert main(["init"]) == 2  # never overwrites without --force
    assert "already exist" in capsys.readouterr().err


def test_promote_list_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["promote", "--data-root", str(tmp_path), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["promoted"] is None


def test_promote_by_hand_waits_for_no_rebuild(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``promote RUN`` takes the data root's lock: refused, naming the holder, while a rebuild holds it."""
    from genreflow.flows.lock import data_root_lock

    with data_root_lock(str(tmp_path)):
        code = subprocess.run([sys.executable, "-m", "genreflow", "promote", "run-x", "--data-root", str(tmp_path)],
                              capture_output=True, text=True, timeout=120)
    assert code.returncode == 1 and "pid" in code.stderr, code.stderr


def test_recorded_configuration_is_read_back(tmp_path: Path) -> None:
    config = Config.model_validate({"run": {"data_root": str(tmp_path)}, "train": {"epochs": 7}})
    record_config(config, {"epochs": 7, "from_stage": "train", "data_root": str(tmp_path)}, "rebuild")
    recorded = json.loads((tmp_path / RECORDED_CONFIG).read_text())
    assert recorded["given"]["epochs"] == 7 and recorded["config"]["train"]["epochs"] == 7
    config = config_from_args(parse(["status", "--data-root", str(tmp_path)]), read_recorded=True)
    assert config.train.epochs == 7 and config.run.from_stage is None  # a forced stage is not handed on


def test_a_rebuild_that_would_swap_the_collection_for_the_default_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A data root built from a folder: a plain ``rebuild --data-root`` would ingest the demo set in its place
    and drop every track. It is refused before anything runs; any source that names the collection goes on."""
    collection = tmp_path / "music"
    collection.mkdir()
    root = tmp_path / "root"
    config = Config.model_validate({"run": {"data_root": str(root)},
                                    "source": {"source": "folder", "input": str(collection)}})
    root.mkdir()
    record_config(config, {"source": "folder", "input": str(collection), "data_root": str(root)}, "rebuild")
    before = sorted(p.name for p in root.iterdir())
    for command in ("rebuild", "preprocess"):
        assert main([command, "--data-root", str(root), "--epochs", "1"]) == 2
        err = capsys.readouterr().err
        assert f"holds the collection of `--source folder --input {collection}`" in err, err
        assert "given no --source or --input" in err and "Traceback" not in err
    assert sorted(p.name for p in root.iterdir()) == before  # nothing ran
    sources = sources_from_args(parse(["rebuild", "--data-root", str(root), "--source", "demo"]))
    check_collection_kept(sources, sources.config())  # named on purpose: replaced
    (tmp_path / PROJECT_FILE).write_text(f'[source]\nsource = "folder"\ninput = "{collection}"\n')
    monkeypatch.chdir(tmp_path)
    sources = sources_from_args(parse(["rebuild", "--data-root", str(root)]))
    check_collection_kept(sources, sources.config())  # the project file names it: the same collection


def test_a_renamed_field_is_still_read_under_its_old_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """rebuild's --model (a family, where predict's --model is a run) is now --family; scripts, config files and
    data roots that say model still work."""
    assert config_from_args(parse(["rebuild", "--model", "cnn"])).train.family == "cnn"
    (tmp_path / PROJECT_FILE).write_text('[train]\nmodel = "embedding"\n')
    assert config_from_args(parse(["rebuild"])).train.family == "embedding"
    monkeypatch.setenv("GENREFLOW_MODEL", "cnn")
    assert config_from_args(parse(["rebuild"])).train.family == "cnn"


def test_mlflow_uri_is_a_flag_that_changes_no_report() -> None:
    """--mlflow-uri (or GENREFLOW_MLFLOW_URI) switches tracking on; the report it logs is the same report."""
    from genreflow.flows.plan import report_spec
    from genreflow.storage.outputs import OutputSpec

    evaluate = OutputSpec("evaluate", "run-x", "code", ["inputs"])
    tracked = config_from_args(parse(["rebuild", "--mlflow-uri", "sqlite:///m.db"]))
    assert tracked.run.mlflow_uri == "sqlite:///m.db"
    assert report_spec(evaluate, [], tracked).fingerprint == report_spec(evaluate, [], Config()).fingerprint
    assert report_spec(evaluate, [], config_from_args(parse(["rebuild", "--epochs", "3"]))).fingerprint != \
        report_spec(evaluate, [], Config()).fingerprint


@pytest.mark.parametrize("command", ["predict", "tag"])
def test_predict_and_tag_take_cluster_settings_as_a_rebuild_does(command: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A project file's cluster and an environment's workers reach a library run; a flag still wins."""
    from genreflow.flows.predict import options_from_args

    (tmp_path / "genreflow.toml").write_text('[run]\ndask_address = "tcp://10.0.0.5:8786"\nretries = 5\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GENREFLOW_WORKERS", "6")
    options = options_from_args(parse([command, "music"]), tmp_path / "model")
    assert (options.workers, options.dask_address, options.retries) == (6, "tcp://10.0.0.5:8786", 5)
    options = options_from_args(parse([command, "music", "--workers", "3", "--dask-address", "tcp://h:1"]),
                                tmp_path / "model")
    assert (options.workers, options.dask_address, options.retries) == (3, "tcp://h:1", 5)
    monkeypatch.delenv("GENREFLOW_WORKERS")
    (tmp_path / "genreflow.toml").unlink()
    options = options_from_args(parse([command, "music"]), tmp_path / "model")
    assert (options.workers, options.dask_address, options.retries) == (2, None, 2)
