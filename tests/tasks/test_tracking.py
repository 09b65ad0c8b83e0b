"""MLflow tracking against a real local store (sqlite in a temporary folder); skipped without the extra."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from genreflow.storage.manifest import write_manifest
from genreflow.storage.outputs import OutputSpec, manifest_path, output_path
from genreflow.storage.root import DataRoot
from genreflow.tasks.tracking import MLFLOW_ENV, flat_params, run_metrics, tracking_uri

SERVER_START_S = 120  # about 16 s on a loaded 2-core machine
EVALUATION = {"family": "cnn", "track_accuracy": 0.75, "clip_accuracy": 0.7, "macro_f1": 0.6, "ece": 0.04,
              "log_loss": float("nan"), "validation": {"track_accuracy": 1.0},
              "per_genre": {"Rock": {"recall": 0.5, "support": 2}, "R&B <Soul>": {"recall": 1.0, "support": 2},
                            "Jazz": {"recall": 0.0, "support": 0}}}


def test_params_and_metrics_are_flat_and_finite() -> None:
    assert flat_params({"train": {"epochs": 6, "time_stretch": [0.8]}, "seed": 1}) == {
        "train.epochs": "6", "train.time_stretch": "[0.8]", "seed": "1"}
    assert run_metrics(EVALUATION) == {"track_accuracy": 0.75, "clip_accuracy": 0.7, "macro_f1": 0.6, "ece": 0.04,
                                       "val_track_accuracy": 1.0, "recall/Rock": 0.5, "recall/R_B _Soul_": 1.0}


def test_the_uri_comes_from_the_configuration_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MLFLOW_ENV, raising=False)
    assert tracking_uri({}) is None
    monkeypatch.setenv(MLFLOW_ENV, "sqlite:///x.db")
    assert tracking_uri({"run": {}}) == "sqlite:///x.db"
    assert tracking_uri({"run": {"mlflow_uri": "http://h:5000"}}) == "http://h:5000"


def test_a_report_is_logged_once_and_reads_back(tmp_path: Path) -> None:
    logged_once_and_read_back(tmp_path, f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.fixture
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 (sqlite behind it, artifacts proxied through it), as a team runs one."""
    pytest.importorskip("mlflow")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed after the server stops
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                               "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", (tmp_path / "artifacts").as_uri()],
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, f"mlflow server did not answer in {SERVER_START_S} s"
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


def test_a_report_is_logged_to_an_mlflow_server(tmp_path: Path, mlflow_server: str) -> None:
    logged_once_and_read_back(tmp_path, mlflow_server)


def logged_once_and_read_back(tmp_path: Path, uri: str) -> None:
    """Log a report's run to ``uri`` twice (the second finds it logged), then read it all back."""
    mlflow = pytest.importorskip("mlflow")
    from genreflow.tasks.report import track_report

    root = DataRoot(str(tmp_path / "data"))
    run = "run-0123456789ab"
    root.write_json(output_path(root, "evaluate", run, "evaluation.json"), EVALUATION)
    report_files = [output_path(root, "report", run, name) for name in (".md", "metrics.json",
                                                                         "excerpts/a-clip0.mp3")]
    for path in report_files:
        root.write_bytes(path, b"x")
    write_manifest(root, manifest_path(root, "report", run), name=f"report/{run}", fingerprint="fp-report",
                   files=report_files, rows=0)
    root.write_bytes(output_path(root, "train", run, "model.keras"), b"model")
    spec = OutputSpec("report", run, "code")
    config = {"train": {"epochs": 6}, "run": {"data_root": root.url}}

    run_id = track_report(root, spec, config, uri, {"decision": "promoted"})
    assert run_id is not None
    assert track_report(root, spec, config, uri) is None  # the same output again: not logged twice

    client = mlflow.MlflowClient(tracking_uri=uri)
    logged = client.get_run(run_id)
    assert logged.data.metrics["track_accuracy"] == 0.75 and logged.data.metrics["val_track_accuracy"] == 1.0
    assert logged.data.params["train.epochs"] == "6"
    assert logged.data.tags["genreflow.promotion"] == "promoted" and logged.info.run_name == run
    artifacts = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/report.md", "report/metrics.json", "report/excerpts"} <= artifacts
    assert [a.path for a in client.list_artifacts(run_id, "model")] == ["model/model.keras"]
