"""Issue 6.7: every invalid value is exactly one line on stderr, exit code != 0, no traceback, before any work.

tests/flows/test_config.py checks that the configuration model rejects a few
values (ConfigError) and runs one case as a subprocess; this is the whole
table, through ``main`` (and, for a sample or in full mode all of it, as a real
``genreflow`` subprocess whose stderr is seen exactly as a user sees it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from genreflow.flows.cli import main
from tests.reliability.conftest import FULL, run_cli

pytestmark = pytest.mark.timeout(180)  # a case that slipped through would start a whole run

# (id, argv after the command's data root is added, fragment of the one error line)
INVALID: list[tuple[str, list[str], str]] = [
    # negative or zero sizes
    ("negative epochs", ["rebuild", "--epochs", "-1"], "train.epochs"),
    ("negative batch", ["rebuild", "--batch-size", "-5"], "train.batch_size"),
    ("zero shard size", ["preprocess", "--shard-size", "0"], "run.shard_size"),
    ("negative shard size", ["rebuild", "--shard-size", "-3"], "run.shard_size"),
    ("zero workers", ["rebuild", "--workers", "0"], "run.workers"),
    ("negative retries", ["rebuild", "--retries", "-1"], "run.retries"),
    ("zero clips", ["rebuild", "--clips-per-track", "0"], "audio.clips_per_track"),
    ("negative clip length", ["rebuild", "--clip-seconds", "-10"], "audio.clip_seconds"),
    ("tiny sample rate", ["rebuild", "--sample-rate", "100"], "audio.sample_rate"),
    ("too few mel bands", ["rebuild", "--n-mels", "4"], "audio.n_mels"),
    ("fft longer than a clip", ["rebuild", "--n-fft", "300000"], "n_fft is longer than a clip"),
    ("negative learning rate", ["train", "--learning-rate", "-0.1"], "train.learning_rate"),
    ("zero patience", ["train", "--patience", "0"], "train.patience"),
    ("zero shuffle buffer", ["train", "--shuffle-buffer", "0"], "train.shuffle_buffer"),
    ("negative demo tracks", ["rebuild", "--tracks-per-genre", "-2"], "source.tracks_per_genre"),
    ("demo-data zero tracks", ["demo-data", "{tmp}/demo", "--tracks-per-genre", "0"], "--tracks-per-genre"),
    ("demo-data negative seed", ["demo-data", "{tmp}/demo", "--seed", "-1"], "seed"),
    ("negative demo seed", ["rebuild", "--demo-seed", "-1"], "source.demo_seed"),
    ("fractions leave no training", ["rebuild", "--val-fraction", "0.45", "--test-fraction", "0.45"],
     "leave tracks for training"),
    ("zero stretch", ["rebuild", "--time-stretch", "0"], "time-stretch rate 0"),
    ("zero pitch shift", ["rebuild", "--pitch-shift", "0"], "pitch shift 0"),
    ("not a number", ["rebuild", "--epochs", "ten"], "invalid int value: 'ten'"),
    ("bad scheduler address", ["rebuild", "--dask-address", "localhost"], "scheduler address"),
    # unknown source, stage, command
    ("unknown source", ["rebuild", "--source", "spotify"], "invalid choice: 'spotify'"),
    ("unknown source in file", ["rebuild", "--config", "{tmp}/source.toml"], "source.source"),
    ("unknown from-stage", ["rebuild", "--from-stage", "mix"], "invalid choice: 'mix'"),
    ("unknown to-stage", ["preprocess", "--to-stage", "blend"], "invalid choice: 'blend'"),
    ("unknown stage in file", ["rebuild", "--config", "{tmp}/stage.toml"], "run.from_stage"),
    ("stages reversed", ["rebuild", "--from-stage", "report", "--to-stage", "decode"], "comes after"),
    ("unknown command", ["frobnicate"], "invalid choice: 'frobnicate'"),
    ("unknown flag", ["rebuild", "--epochz", "3"], "unrecognized arguments"),
    # bad cron expressions for serve
    ("cron words", ["serve", "--cron", "every night"], "not a valid cron expression"),
    ("cron minute 61", ["serve", "--cron", "61 * * * *"], "not a valid cron expression"),
    ("cron hour 25", ["serve", "--cron", "0 25 * * *"], "not a valid cron expression"),
    ("cron too short", ["serve", "--cron", "* * *"], "not a valid cron expression"),
    ("serve bad value", ["serve", "--workers", "-1"], "run.workers"),
    # unreadable paths
    ("missing config", ["rebuild", "--config", "{tmp}/nope.toml"], "cannot read config file"),
    ("config is a folder", ["rebuild", "--config", "{tmp}"], "cannot read config file"),
    ("broken config", ["rebuild", "--config", "{tmp}/broken.toml"], "not valid toml"),
    ("missing input", ["rebuild", "--source", "folder", "--input", "{tmp}/nowhere"], "no such path"),
    ("input under a file", ["preprocess", "--source", "csv", "--input", "{tmp}/file/labels.csv"], "no such path"),
    ("input needs a folder", ["rebuild", "--source", "fma", "--input", "{tmp}/file"], "needs a folder"),
    ("input needs a file", ["rebuild", "--source", "csv", "--input", "{tmp}"], "needs a CSV file"),
    ("source without input", ["rebuild", "--source", "csv"], "needs --input PATH"),
    ("audio not a folder", ["rebuild", "--source", "csv", "--input", "{tmp}/file", "--audio", "{tmp}/nowhere"],
     "--audio"),
    ("data root under a file", ["rebuild", "--data-root", "{tmp}/file/root"], "not writable"),
    ("demo-data under a file", ["demo-data", "{tmp}/file/demo"], "cannot create the folder"),
    ("download under a file", ["download", "fma_metadata", "--to", "{tmp}/file/raw"], "cannot create the folder"),
    ("predict missing model", ["predict", "{tmp}/song.mp3", "--model", "{tmp}/no-model"], "no model.keras"),
]
# A sample that also runs as a real subprocess in quick mode; full mode runs every case that way.
SUBPROCESS_SAMPLE = {"negative batch", "unknown source", "cron minute 61", "input under a file", "unknown command"}
WORKFLOWS = {"rebuild", "preprocess", "train", "evaluate", "status", "serve"}


def _argv(argv: list[str], tmp: Path) -> list[str]:
    args = [a.replace("{tmp}", str(tmp)) for a in argv]
    if args[0] in WORKFLOWS and "--data-root" not in args:
        args += ["--data-root", str(tmp / "root")]
    return args


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    (tmp_path / "file").write_text("a regular file\n")
    (tmp_path / "source.toml").write_text('[source]\nsource = "spotify"\n')
    (tmp_path / "stage.toml").write_text('[run]\nfrom_stage = "mix"\n')
    (tmp_path / "broken.toml").write_text("[train\nepochs =")
    return tmp_path


def _nothing_started(tmp: Path) -> None:
    assert not (tmp / "root").exists(), "the data root was created"
    assert not (tmp / "demo").exists()


@pytest.mark.parametrize(("argv", "fragment"), [(a, f) for _, a, f in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_value_is_one_line_before_any_work(
    workspace: Path, capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str
) -> None:
    try:
        code = main(_argv(argv, workspace))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code not in (0, None)
    assert len(lines) == 1, err
    assert lines[0].startswith("genreflow") and ": error: " in lines[0], lines[0]
    assert fragment in lines[0], lines[0]
    _nothing_started(workspace)


@pytest.mark.parametrize(("argv", "fragment"), [(a, f) for i, a, f in INVALID if FULL or i in SUBPROCESS_SAMPLE],
                         ids=[i for i, _, _ in INVALID if FULL or i in SUBPROCESS_SAMPLE])
def test_invalid_value_as_a_real_command(workspace: Path, argv: list[str], fragment: str) -> None:
    result = run_cli(_argv(argv, workspace), workspace, timeout=120)
    assert result.returncode != 0
    assert len(result.error_lines) == 1, result.stderr
    assert fragment in result.error_lines[0] and "Traceback" not in result.stderr
    _nothing_started(workspace)
