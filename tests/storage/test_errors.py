"""Every error a user can act on is a GenreflowError, and the CLI tells them from bugs by that class alone."""

from __future__ import annotations

import pytest

from genreflow.flows import cli
from genreflow.flows.config import ConfigError
from genreflow.flows.lock import DataRootLocked
from genreflow.flows.preprocess import StageFailed
from genreflow.flows.train import TrainingError
from genreflow.model.audio import AudioError
from genreflow.model.dataset import DatasetError
from genreflow.model.files import ModelNotFound
from genreflow.model.musicnn import MusicnnError
from genreflow.model.predict import PredictError
from genreflow.model.weights import WeightsError
from genreflow.storage.errors import GenreflowError
from genreflow.storage.root import StorageError, UnsafeFileError
from genreflow.tasks.sources import IngestError
from genreflow.tasks.sources.demo_synth import DemoError
from genreflow.tasks.sources.fma_download import DownloadError, UnsafeArchiveError

USER_ERRORS = [ConfigError, DataRootLocked, ModelNotFound, StageFailed, TrainingError, AudioError, DatasetError,
               PredictError, StorageError, UnsafeFileError, DemoError, DownloadError, UnsafeArchiveError, IngestError,
               MusicnnError, WeightsError]


@pytest.mark.parametrize("error", USER_ERRORS, ids=lambda e: e.__name__)
def test_user_errors_share_the_base_and_keep_their_builtin_one(error: type[Exception]) -> None:
    assert issubclass(error, GenreflowError)
    assert issubclass(error, (ValueError, RuntimeError, OSError))  # the builtin base callers may still catch


def test_cli_prints_a_user_error_as_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    def fail(args: object) -> int:
        raise DemoError("seed must be >= 0")

    monkeypatch.setattr(cli, "_run_demo", fail)
    assert cli.main(["demo-data", "somewhere"]) == 1
    assert capsys.readouterr().err == "genreflow: error: seed must be >= 0\n"


def test_cli_lets_a_bug_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(args: object) -> int:
        raise ValueError("a bug, not the user's input")

    monkeypatch.setattr(cli, "_run_demo", fail)
    with pytest.raises(ValueError, match="a bug"):
        cli.main(["demo-data", "somewhere"])
