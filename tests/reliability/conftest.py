"""Reliability tests share the flow tests' Prefect harness and demo set, plus a few helpers.

Quick mode is the default (CI); ``GENREFLOW_FULL_RELIABILITY=1`` turns on the
fuller variants (more kill points, every invalid flag as a subprocess).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.settings import get_current_settings

from tests.flows.conftest import demo_dir, prefect_harness, shared_cluster, small_config

__all__ = ["FULL", "CliResult", "cli_env", "cli_flags", "copy_root", "demo_dir", "prefect_harness", "preprocessed_root",
           "run_cli", "shared_cluster", "small_config"]

FULL = os.environ.get("GENREFLOW_FULL_RELIABILITY", "") not in ("", "0", "false")
REPO = Path(__file__).resolve().parents[2]


def cli_env(tmp_path: Path, share_api: bool = True) -> dict[str, str]:
    """Environment for a ``genreflow`` subprocess: quiet, offline, and on the harness's API.

    Sharing the session's Prefect API saves each subprocess the ~10 s start of
    a temporary one.
    """
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    env.pop("PREFECT_API_URL", None)
    url = get_current_settings().api.url
    if share_api and url:
        env["PREFECT_API_URL"] = url
    return env


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """Non-blank stderr lines."""
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(args: list[str], tmp_path: Path, timeout: float = 300, **kwargs: object) -> CliResult:
    """``python -m genreflow.flows.cli ARGS`` in a subprocess."""
    done = subprocess.run([sys.executable, "-m", "genreflow.flows.cli", *args], env=cli_env(tmp_path),
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path, **kwargs)  # type: ignore[call-overload]
    return CliResult(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="session")
def full_mode() -> bool:
    return FULL


PREPROCESS_OPTIONS: dict[str, object] = {"shard_size": 4}


def cli_flags(root: Path, source: Path) -> list[str]:
    """The CLI flags of ``small_config(root, source, **PREPROCESS_OPTIONS)``: the same plan, so the same shards."""
    return ["--source", "folder", "--input", str(source), "--data-root", str(root), "--shard-size", "4",
            "--workers", "2", "--retries", "0"]


@pytest.fixture(scope="session")
def preprocessed_root(tmp_path_factory: pytest.TempPathFactory, demo_dir: Path) -> Path:
    """One finished preprocessing of the demo set; tests copy it (``copy_root``) before they damage it."""
    from genreflow.flows.rebuild import run_command

    root = tmp_path_factory.mktemp("preprocessed")
    run_command("preprocess", small_config(root, demo_dir, **PREPROCESS_OPTIONS))
    return root


def copy_root(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
