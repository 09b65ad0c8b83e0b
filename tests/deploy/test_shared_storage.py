"""Cluster-facing checks of the command line: object-store data roots and ``genreflow serve``."""

from __future__ import annotations

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from genreflow.flows.cli import main
from genreflow.flows.config import ConfigError, build_config
from genreflow.flows.rebuild import preflight
from genreflow.flows.serve import ENTRY_FLOWS, serve_rebuild

REMOTE = "memory://genreflow-shared-storage-test"  # an fsspec URL that is not a local path, like s3://


def test_preprocessing_may_use_an_object_store_data_root() -> None:
    preflight(build_config(None, data_root=REMOTE, to_stage="augment"))
    preflight(build_config(None, data_root=REMOTE, to_stage="stats"))


@pytest.mark.parametrize("overrides", [{}, {"from_stage": "train"}, {"from_stage": "evaluate"}])
def test_training_on_an_object_store_data_root_is_refused_before_any_work(overrides: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"not a local path, and .*need one"):
        preflight(build_config(None, data_root=REMOTE, **overrides))


def test_cli_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rebuild", "--data-root", REMOTE]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genreflow: error: --data-root memory://") and "\n" not in err


def test_serve_without_a_prefect_server_says_how_to_start_one(capsys: pytest.CaptureFixture[str]) -> None:
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["serve", "--flow", "preprocess"]) == 2
    assert "prefect server start" in capsys.readouterr().err


def test_serve_refuses_a_bad_cron_and_an_unknown_flow() -> None:
    config = build_config(None)
    with pytest.raises(ConfigError, match="not a valid cron"):
        serve_rebuild(config, cron="every night", name="x")
    with pytest.raises(ConfigError, match="--flow"):
        serve_rebuild(config, cron="0 2 * * *", name="x", command="predict")
    assert set(ENTRY_FLOWS) == {"rebuild", "preprocess", "train"}
