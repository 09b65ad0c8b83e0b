"""Issue 21: the data root remembers the configuration a rebuild ran with, so a plain ``genreflow status`` (and
train, evaluate) agrees with the last rebuild; ``--fail-on-reject`` turns the gate's refusal into exit 3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from genreflow.flows.cli import EXIT_OK, EXIT_REJECTED, build_parser, config_from_args, main
from genreflow.flows.status import collect_status

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for variable in [v for v in os.environ if v.startswith("GENREFLOW_")]:
        monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)


def status_of(root: Path) -> dict:
    return collect_status(config_from_args(build_parser().parse_args(["status", "--data-root", str(root)]),
                                           read_recorded=True))


def test_status_with_no_flags_after_a_non_default_rebuild_is_all_done(demo_dir: Path, tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    common = ["--source", "folder", "--input", str(demo_dir), "--data-root", str(root), "--shard-size", "4",
              "--workers", "2", "--retries", "0", "--model", "cnn", "--baseline", "off", "--time-stretch", "0.9",
              "--pitch-shift", "--batch-size", "8"]
    assert main(["rebuild", *common, "--epochs", "2", "--n-mels", "96"]) == EXIT_OK
    status = status_of(root)
    stages = status["stages"]
    assert set(stages) == {"decode", "mel", "augment"} and all(set(c) == {"done"} for c in stages.values()), stages
    shards = stages["mel"]["done"]
    assert (status["stats"], status["train"]) == ("done", "done")
    # Without the record, the default n_mels and epochs plan other outputs: what status said before issue 21.
    (root / "config.json").unlink()
    assert status_of(root)["stages"]["mel"] == {"stale": shards} and status_of(root)["train"] == "missing"
    # A gate that refuses the new model: exit 3 with --fail-on-reject, for cron.
    code = main(["rebuild", *common, "--epochs", "1", "--n-mels", "96", "--promote", "never", "--fail-on-reject"])
    assert code == EXIT_REJECTED
    assert "was not promoted" in capsys.readouterr().err
    assert status_of(root)["train"] == "done"
