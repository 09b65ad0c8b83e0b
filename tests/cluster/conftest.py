"""Real servers as separate processes on 127.0.0.1: PostgreSQL, a Prefect server on it, Dask.

Nothing here is in-process: ``initdb``/``pg_ctl`` (Debian's postgresql, as the
``postgres`` user when we are root, since PostgreSQL refuses to run as root),
``prefect server start``, ``dask scheduler`` and ``dask worker`` are started
with subprocess on free ports, and every genreflow run goes through its CLI.
The fixtures are module-scoped, so the servers stop before the next test module.
Without PostgreSQL binaries the tests skip, except under CI=true, where .ci/run
installs them and a missing binary is a failure.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
BIN = Path(sys.executable).parent  # the venv's prefect, dask and genreflow
REPO = Path(__file__).resolve().parents[2]


def executable(name: str) -> str:
    """The venv's console script ``name`` (prefect, dask, genreflow), else the one on PATH."""
    candidate = BIN / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed in {BIN} nor on PATH")
    return found


def unavailable(reason: str) -> None:
    """Skip on a developer machine; fail under CI, where .ci/run provides everything."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: .ci/run installs postgresql; run it as root)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.25,
               process: subprocess.Popen | None = None, log: Path | None = None) -> Any:
    """Poll ``condition()`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"{what}: the process exited with {process.returncode}\n{log_tail(log) if log else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s\n{log_tail(log) if log else ''}")
        time.sleep(interval)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
    """Stop a process started with start_new_session=True, and everything it started."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


@dataclass
class Processes:
    """Background processes of one test module, each in its own session, logged to a file."""

    logs: Path
    env: dict[str, str]
    running: list[subprocess.Popen] = field(default_factory=list)
    _handles: list[IO[bytes]] = field(default_factory=list)

    def start(self, name: str, command: list[str], **env: str) -> tuple[subprocess.Popen, Path]:
        log = self.logs / f"{name}.log"
        handle = open(log, "ab")  # noqa: SIM115 - closed in close()
        self._handles.append(handle)
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**self.env, **env}, cwd=REPO, start_new_session=True)
        self.running.append(process)
        return process, log

    def close(self) -> None:
        for process in reversed(self.running):
            stop(process)
        for handle in self._handles:
            handle.close()


# ---- PostgreSQL --------------------------------------------------------------------------------
def postgres_bindir() -> Path | None:
    """Debian keeps the server binaries in /usr/lib/postgresql/<version>/bin, off PATH."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def as_postgres_user() -> list[str]:
    """The prefix that runs a command as the ``postgres`` user when we are root; none otherwise."""
    if os.geteuid() != 0:
        return []
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        unavailable("running as root without a `postgres` user to run PostgreSQL as")
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--"]
    return ["su", "postgres", "-s", "/bin/sh", "-c"]  # pragma: no cover - runuser is in util-linux


def run_as_postgres(command: list[str]) -> subprocess.CompletedProcess:
    prefix = as_postgres_user()
    if prefix and prefix[0] == "su":
        import shlex

        command = [*prefix, shlex.join(command)]
    else:
        command = [*prefix, *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd="/")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free port; yields the asyncpg URL of database ``prefect``."""
    bindir = postgres_bindir()
    if bindir is None or not (bindir / "initdb").exists():
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    base = Path(tempfile.mkdtemp(prefix="genreflow-pg-"))
    if os.geteuid() == 0:
        as_postgres_user()
        shutil.chown(base, user="postgres")
    data, port = base / "data", free_port()
    init = run_as_postgres([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                            "-E", "UTF8", "--no-sync"])
    if init.returncode:
        pytest.fail(f"initdb failed: {init.stderr or init.stdout}")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    start = run_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "postgres.log"),
                             "-o", options, "-w", "-t", "60", "start"])
    if start.returncode:
        pytest.fail(f"pg_ctl start failed: {start.stderr or start.stdout}\n{log_tail(base / 'postgres.log')}")
    try:
        created = subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                  "prefect"], capture_output=True, text=True, timeout=60)
        if created.returncode:
            pytest.fail(f"createdb failed: {created.stderr}")
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/prefect"
    finally:
        run_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(base, ignore_errors=True)


# ---- Prefect server, Dask scheduler and workers -------------------------------------------------
@dataclass
class Cluster:
    """The running servers of the cluster tests and how to reach them."""

    api_url: str
    scheduler_address: str
    processes: Processes
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The environment of every client process: Prefect's API is the PostgreSQL-backed server."""
        return {**self.processes.env, "PREFECT_API_URL": self.api_url}

    def start_worker(self, name: str) -> None:
        # PYTHONFAULTHANDLER: a worker stopped with SIGABRT (dump_hung_workers) writes every thread's stack
        # to its log first.
        process, _ = self.processes.start(
            f"dask-worker-{name}", [executable("dask"), "worker", self.scheduler_address, "--name", name,
                                    "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard"],
            PREFECT_API_URL=self.api_url, PYTHONFAULTHANDLER="1")
        self.workers[name] = process

    def dump_hung_workers(self) -> str:
        """Abort every worker process (not its nanny) so that it logs its threads' stacks; the logs' tails.

        For a test that timed out waiting on the cluster: says where a worker hung.
        """
        import psutil

        tails = []
        for name, nanny in self.workers.items():
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(nanny.pid).children(recursive=True):
                    child.send_signal(signal.SIGABRT)
            time.sleep(2)
            tails.append(f"--- dask-worker-{name}.log\n{log_tail(self.processes.logs / f'dask-worker-{name}.log')}")
        return "\n".join(tails)

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker's whole process group: its nanny and the worker process it runs."""
        os.killpg(self.workers[name].pid, signal.SIGKILL)
        self.workers.pop(name).wait(timeout=30)

    def wait_for_workers(self, count: int, timeout: float = 90) -> None:
        from distributed import Client

        with Client(self.scheduler_address, timeout=30) as client:
            client.wait_for_workers(count, timeout=timeout)
            wait_until(lambda: len(client.scheduler_info(n_workers=-1)["workers"]) == count, 30,
                       f"exactly {count} Dask workers")

    def genreflow(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run the genreflow CLI in a subprocess against this cluster's Prefect server."""
        return self.command([executable("genreflow"), *args], timeout=timeout)

    def command(self, command: list[str], timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(command, env={**self.env, **env}, cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)


@pytest.fixture(scope="module")
def booting_cluster(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """``prefect server start`` on PostgreSQL, a ``dask scheduler`` and two ``dask worker`` processes, started.

    Not yet waited for: the Prefect server's first start (its migrations) takes
    seconds that the demo set's encoding can use; ``cluster`` waits.
    """
    logs = tmp_path_factory.mktemp("cluster-logs")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path_factory.mktemp("prefect-home")), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_LOGGING_LEVEL="INFO", TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    processes = Processes(logs, env)
    try:
        port = free_port()
        processes.start("prefect-server", [executable("prefect"), "server", "start", "--host", "127.0.0.1",
                                           "--port", str(port)],
                        PREFECT_API_DATABASE_CONNECTION_URL=postgres_url, PREFECT_UI_ENABLED="false")
        scheduler_file = logs / "scheduler.json"
        scheduler, scheduler_log = processes.start(
            "dask-scheduler", [executable("dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--no-dashboard", "--scheduler-file", str(scheduler_file)])
        wait_until(lambda: scheduler_file.exists() and scheduler_file.stat().st_size, 60, "dask scheduler start",
                   process=scheduler, log=scheduler_log)
        booting = Cluster(f"http://127.0.0.1:{port}/api", json.loads(scheduler_file.read_text())["address"],
                          processes)
        for name in ("worker-a", "worker-b"):
            booting.start_worker(name)
        yield booting
    finally:
        processes.close()


@pytest.fixture(scope="module")
def cluster_demo(booting_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The flow tests' small demo set (3 tracks a genre, 12 s each), encoded while the servers boot."""
    from genreflow.tasks.sources.demo_synth import generate_demo_set
    from tests.flows.conftest import DEMO_SECONDS, DEMO_TRACKS_PER_GENRE

    folder = tmp_path_factory.mktemp("cluster-demo")
    generate_demo_set(folder, tracks_per_genre=DEMO_TRACKS_PER_GENRE, seed=7, seconds=DEMO_SECONDS)
    return folder


@pytest.fixture(scope="module")
def cluster(booting_cluster: Cluster, cluster_demo: Path) -> Cluster:
    """The servers, up: the Prefect API answers and both Dask workers are registered."""
    server = booting_cluster.processes.running[0]
    log = booting_cluster.processes.logs / "prefect-server.log"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{booting_cluster.api_url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_until(healthy, 180, "prefect server start on PostgreSQL", interval=0.5, process=server, log=log)
    booting_cluster.wait_for_workers(2)
    return booting_cluster
