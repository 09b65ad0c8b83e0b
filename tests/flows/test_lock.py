"""A second run on a data root is refused clearly while the first holds it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from genreflow.flows.cli import main
from genreflow.flows.lock import DataRootLocked, data_root_lock


def test_second_holder_is_refused_and_lock_is_released(tmp_path: Path) -> None:
    with (data_root_lock(str(tmp_path)), pytest.raises(DataRootLocked, match="in use by another genreflow run"),
          data_root_lock(str(tmp_path))):
        pass
    with data_root_lock(str(tmp_path)):  # released after the block
        pass


def test_lock_dies_with_a_killed_holder(tmp_path: Path) -> None:
    code = ("import os, signal; from flows.lock import data_root_lock\n"
            f"with data_root_lock({str(tmp_path)!r}): os.kill(os.getpid(), signal.SIGKILL)")
    result = subprocess.run([sys.executable, "-c", code], timeout=60)
    assert result.returncode == -9
    with data_root_lock(str(tmp_path)):
        pass


def test_cli_run_on_a_held_root_says_who_holds_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with data_root_lock(str(tmp_path)):
        code = main(["preprocess", "--data-root", str(tmp_path), "--tracks-per-genre", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "in use by another genreflow run" in err and '"pid"' in err
    assert not (tmp_path / "tracks.parquet").exists()
