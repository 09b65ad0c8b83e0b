"""Issue 25.4: two users at once on one data root or one predict work folder.

- ``promote`` while a rebuild runs is refused, naming the rebuild, and changes nothing; afterwards it works.
- ``status`` while a rebuild runs answers, says which run holds the root, and writes nothing: it runs on a
  read-only bind mount of the data root (root only; skipped where mounting is not allowed).
- Two ``predict`` runs over one work folder: the second is refused with the first's pid, and the table the
  first wrote is whole, and the same as a later run's.

The rebuild (training only: it starts from a copy of the session's preprocessed root, 1 epoch, the CNN alone)
runs in a thread of this process, so that the other users act while it holds the lock; they are subprocesses,
as other users are, except the second predict, which must reach the lock within the first one's run.
"""

from __future__ import annotations

import contextvars
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from genreflow.flows.cli import main
from genreflow.flows.lock import LOCK_NAME, lock_holder
from genreflow.flows.rebuild import run_command
from genreflow.storage.registry import read_registry
from genreflow.storage.root import DataRoot
from tests.reliability.conftest import PREPROCESS_OPTIONS, cli_env, copy_root, small_config

pytestmark = pytest.mark.timeout(900)

WAIT_S = 600  # the longest a step here waits for another user's run


def start_cli(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    """``genreflow ARGS`` as another user's process, started now."""
    return subprocess.Popen([sys.executable, "-m", "genreflow.flows.cli", *args], env=cli_env(tmp_path),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition: Callable[[], bool], still: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` every 20 ms while ``still`` holds; fail if it never came true."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert still() and time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.02)


def holder_pid(folder: Path) -> int | None:
    holder = lock_holder(str(folder))
    return json.loads(holder)["pid"] if holder else None


@contextmanager
def read_only_view(source: Path, target: Path) -> Iterator[Path | str]:
    """``source`` mounted read-only at ``target``: whatever runs there cannot write, whatever it tries. Where
    mounting is not allowed: why, instead of the view."""
    target.mkdir()
    done = subprocess.run(["mount", "--bind", str(source), str(target)], capture_output=True, text=True)
    if done.returncode:
        yield f"cannot bind-mount a read-only view here (needs root): {done.stderr.strip()}"
        return
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(target)], check=True, capture_output=True)
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


def status_of(root: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``genreflow status --json`` of ``root`` by another user."""
    return subprocess.run([sys.executable, "-m", "genreflow.flows.cli", "status", "--json", "--data-root", str(root)],
                          env=cli_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=WAIT_S)


@pytest.fixture(scope="module")
def during_rebuild(tmp_path_factory: pytest.TempPathFactory, preprocessed_root: Path, demo_dir: Path) -> dict:
    """A rebuild in a thread; while it holds the lock, a promote and a status (on a read-only view) run."""
    base = tmp_path_factory.mktemp("concurrent")
    root = copy_root(preprocessed_root, base / "root")
    config = small_config(root, demo_dir, **PREPROCESS_OPTIONS, epochs=1, family="cnn", baseline=False)
    outcome: dict = {}
    context = contextvars.copy_context()  # the session's Prefect test harness settings, in the thread too
    thread = threading.Thread(target=lambda: outcome.update(context.run(run_command, "rebuild", config)))
    thread.start()
    try:
        wait_for(lambda: holder_pid(root) is not None, thread.is_alive, "the rebuild take the lock")
        promote = start_cli(["promote", "run-by-hand", "--data-root", str(root)], base)
        try:
            with read_only_view(root, base / "view") as view:
                status = view if isinstance(view, str) else status_of(view, base)
        finally:
            promote_out, promote_err = promote.communicate(timeout=WAIT_S)
    finally:
        thread.join(WAIT_S)
    return {"root": root, "base": base, "outcome": outcome, "status": status,
            "promote": (promote.returncode, promote_out, promote_err)}


def test_promote_during_a_rebuild_is_refused_naming_it(during_rebuild: dict) -> None:
    code, _, err = during_rebuild["promote"]
    assert code == 1 and "in use by another genreflow run" in err and f'"pid": {os.getpid()}' in err, err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    root = DataRoot(str(during_rebuild["root"]))
    run = during_rebuild["outcome"]["train"]["run"]
    assert read_registry(root).promoted == run  # the rebuild's own promotion, not the refused one
    assert all(record.run != "run-by-hand" for record in read_registry(root).history)
    # Once the rebuild is done the same command goes through.
    assert main(["promote", run, "--data-root", str(during_rebuild["root"])]) == 0


def test_status_during_a_rebuild_answers_read_only(during_rebuild: dict) -> None:
    status = during_rebuild["status"]
    if isinstance(status, str):
        pytest.skip(status)
    assert status.returncode == 0, status.stderr
    answer = json.loads(status.stdout)
    assert answer["ingested"] and answer["tracks"] == 24 and answer["stages"]["decode"] == {"done": answer["shards"]}
    # It ran while the rebuild held the root, and said so; the read-only mount refused any write it tried.
    assert answer["in_use_by"] and json.loads(answer["in_use_by"])["pid"] == os.getpid()
    assert holder_pid(during_rebuild["root"]) is None  # released with the rebuild


def test_two_predicts_on_one_work_folder(during_rebuild: dict, demo_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    import genreflow.model.predict  # noqa: F401 - TensorFlow loaded now, so the second run reaches the lock at once

    base, root = during_rebuild["base"], str(during_rebuild["root"])
    out, work = base / "library.parquet", base / "work"
    args = ["predict", str(demo_dir), "--data-root", root, "--out", str(out), "--work", str(work)]
    first = start_cli(args, base)
    wait_for(lambda: holder_pid(work) == first.pid, lambda: first.poll() is None, "the first predict hold --work")
    assert main(args) == 1  # the second user, while the first predicts
    err = capsys.readouterr().err
    assert "in use by another genreflow run" in err and f'"pid": {first.pid}' in err, err
    _, first_err = first.communicate(timeout=WAIT_S)
    assert first.returncode == 0, first_err
    table = pd.read_parquet(out)
    assert len(table) == table["path"].nunique() == 24 and (table["error"] == "").all()
    # The refused run broke nothing: a run now finds every bucket done and writes the same table.
    assert main(args) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), table)
    assert (work / LOCK_NAME).is_file() and holder_pid(work) is None
