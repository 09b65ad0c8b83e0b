"""A one-node SLURM on localhost, as root: munged, slurmctld and slurmd from Debian's packages.

Everything lives in one temporary folder (munge key and socket, slurm.conf,
state, spool, logs) and the daemons listen on free ports, so a SLURM the
machine may already run is left alone. Clients (``sbatch``, ``squeue``,
``scancel``, and so dask-jobqueue) find this cluster through ``SLURM_CONF``,
and slurm.conf's ``AuthInfo=socket=`` points them at this munged.
Where SLURM cannot start (not root, no packages) the test skips, except under
CI=true, where .ci/run installs the packages and a missing piece is a failure.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.cluster.conftest import IN_CI, Processes, free_port, log_tail, wait_until

DAEMONS = {"munged": "munge", "slurmctld": "slurmctld", "slurmd": "slurmd", "sbatch": "slurm-client",
           "squeue": "slurm-client", "scancel": "slurm-client"}
PACKAGES = ("slurm-wlm", "munge")


def unavailable(reason: str) -> None:
    """Skip on a developer machine; fail under CI=true, where .ci/run installs SLURM and runs as root."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: .ci/run installs slurm-wlm and munge; run it as root)")
    pytest.skip(reason)


def binary(name: str) -> str | None:
    """``name`` on PATH or in the sbin folders, which a non-login root shell may lack on PATH."""
    return shutil.which(name) or next((f"{d}/{name}" for d in ("/usr/sbin", "/sbin", "/usr/local/sbin")
                                       if os.access(f"{d}/{name}", os.X_OK)), None)


def missing_binaries() -> list[str]:
    return [name for name in DAEMONS if binary(name) is None]


def install_packages() -> None:
    """apt-get install slurm-wlm munge; only under CI=true (a developer's machine is not changed)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *PACKAGES]):
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode:
            pytest.fail(f"{' '.join(command)} failed: {done.stderr[-2000:]}")


def require_slurm() -> None:
    """Root, the munge user and the SLURM binaries, or skip (fail under CI) saying which is missing."""
    if os.geteuid() != 0:
        unavailable("a one-node SLURM needs root (slurmd runs jobs as their users; munged as `munge`)")
    if missing_binaries() and IN_CI and shutil.which("apt-get"):
        install_packages()
    missing = missing_binaries()
    if missing:
        packages = sorted({DAEMONS[name] for name in missing})
        unavailable(f"SLURM is not installed ({', '.join(missing)} missing from {', '.join(packages)}): "
                    f"apt-get install {' '.join(PACKAGES)}")
    try:
        pwd.getpwnam("munge")
    except KeyError:
        unavailable("no `munge` user to run munged as: apt-get install munge")


def node_resources() -> tuple[int, int]:
    """This machine's CPUs and RealMemory (MiB) as slurmd itself detects them (``slurmd -C``).

    Configuring more than slurmd finds would drain the node; this is exactly what it finds.
    """
    found = subprocess.run([binary("slurmd") or "slurmd", "-C"], capture_output=True, text=True, timeout=60)
    fields = dict(item.split("=", 1) for item in found.stdout.split() if "=" in item)
    try:
        return int(fields["CPUs"]), int(fields["RealMemory"])
    except (KeyError, ValueError):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return len(os.sched_getaffinity(0)), pages // 2**20


@dataclass
class Slurm:
    """The running one-node SLURM: its configuration, the environment its clients need, its daemons."""

    base: Path
    conf: Path
    node: str
    munge_dir: Path
    processes: Processes
    env: dict[str, str] = field(default_factory=dict)

    def client(self, *command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """A SLURM client command (squeue, sinfo, scancel, ...) against this cluster."""
        return subprocess.run([binary(command[0]) or command[0], *command[1:]], capture_output=True, text=True,
                              env=self.env, timeout=timeout)

    def queue(self) -> list[dict[str, str]]:
        """The jobs ``squeue`` lists: id, name, state and node, one dict each."""
        listed = self.client("squeue", "--noheader", "--format=%i|%j|%T|%N")
        if listed.returncode:
            pytest.fail(f"squeue failed: {listed.stderr}")
        return [dict(zip(("id", "name", "state", "node"), line.split("|"), strict=True))
                for line in listed.stdout.splitlines() if line.strip()]

    def node_state(self) -> str:
        return self.client("sinfo", "--noheader", "--nodes", self.node, "--format=%T").stdout.strip()

    def cancel_all(self, timeout: float = 60) -> None:
        """scancel every job and wait until ``squeue`` lists none."""
        jobs = [job["id"] for job in self.queue()]
        if jobs:
            self.client("scancel", *jobs)
        wait_until(lambda: not self.queue(), timeout, "the SLURM queue to empty after scancel", interval=1)

    def daemon_logs(self) -> str:
        logs = [self.munge_dir / "munged.log", self.base / "log" / "slurmctld.log", self.base / "log" / "slurmd.log"]
        return "\n".join(f"--- {path.name}\n{log_tail(path)}" for path in logs)


def slurm_conf(base: Path, node: str, cpus: int, memory_mb: int, munge_socket: Path) -> str:
    """A minimal slurm.conf: this host as controller and only node, no cgroups, no accounting database.

    proctrack/linuxproc and task/none need no cgroup hierarchy (a container often
    has none); jobcomp/filetxt records every finished job in a file, in place of sacct.
    """
    return "\n".join([
        "ClusterName=genreflow-test",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={free_port()}",
        f"SlurmdPort={free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={base / 'state'}",
        f"SlurmdSpoolDir={base / 'spool'}",
        f"SlurmctldPidFile={base / 'slurmctld.pid'}",
        f"SlurmdPidFile={base / 'slurmd.pid'}",
        f"SlurmctldLogFile={base / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={base / 'log' / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={base / 'log' / 'jobcomp.txt'}",
        "ReturnToService=2",
        "KillWait=5",
        "MessageTimeout=30",
        "SlurmctldTimeout=60",
        "SlurmdTimeout=60",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def processes_of(conf: Path) -> list[int]:
    """Processes that run with this cluster's SLURM_CONF: slurmstepd and the jobs' own processes."""
    import psutil

    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.pid != os.getpid() and process.environ().get("SLURM_CONF") == str(conf):
                found.append(process.pid)
    return found


@contextlib.contextmanager
def one_node_slurm(base: Path, env: dict[str, str]) -> Iterator[Slurm]:
    """munged (as the munge user), slurmctld and slurmd in ``base``; the node idle when it yields.

    On the way out: every job cancelled and waited for, the daemons stopped, and any
    process still running with this cluster's SLURM_CONF (a stepd, a worker) killed.
    """
    require_slurm()
    munge = pwd.getpwnam("munge")
    for name in ("state", "spool", "log"):
        (base / name).mkdir()
    # munged runs as munge, which cannot enter pytest's tmp folders (0700 root): its own folder in /tmp
    munge_dir = Path(tempfile.mkdtemp(prefix="genreflow-munge-"))
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    for path in (munge_dir, key):
        os.chown(path, munge.pw_uid, munge.pw_gid)
    munge_dir.chmod(0o700)
    munge_socket = munge_dir / "munge.socket"

    node = socket.gethostname().split(".")[0]
    cpus, memory_mb = node_resources()
    conf = base / "slurm.conf"
    conf.write_text(slurm_conf(base, node, cpus, memory_mb, munge_socket))
    slurm = Slurm(base, conf, node, munge_dir, Processes(base / "log", {**env, "SLURM_CONF": str(conf)}),
                  {**env, "SLURM_CONF": str(conf)})
    try:
        munged = subprocess.Popen(  # as the munge user, which munged insists on; our own child, reaped by stop()
            [binary("munged") or "munged", "--foreground", "--force", f"--key-file={key}",
             f"--socket={munge_socket}", f"--pid-file={munge_dir / 'munged.pid'}",
             f"--log-file={munge_dir / 'munged.log'}", f"--seed-file={munge_dir / 'munged.seed'}"],
            user=munge.pw_uid, group=munge.pw_gid, extra_groups=[], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=munge_dir, start_new_session=True)
        slurm.processes.running.insert(0, munged)  # stopped last, after the SLURM daemons
        wait_until(munge_socket.exists, 30, "munged to open its socket", process=munged,
                   log=munge_dir / "munged.log")
        ctld, _ = slurm.processes.start("slurmctld-stdout", [binary("slurmctld") or "slurmctld", "-D", "-c",
                                                             "-f", str(conf)])
        slurmd, _ = slurm.processes.start("slurmd-stdout", [binary("slurmd") or "slurmd", "-D", "-N", node,
                                                            "-f", str(conf)])
        try:
            wait_until(lambda: slurm.node_state() in {"idle", "idle~"}, 90, "the SLURM node to come up idle",
                       interval=0.5)
        except BaseException:
            print(slurm.daemon_logs())
            raise
        for process, what in ((ctld, "slurmctld"), (slurmd, "slurmd")):
            if process.poll() is not None:
                pytest.fail(f"{what} exited with {process.returncode}\n{slurm.daemon_logs()}")
        yield slurm
    finally:
        with contextlib.suppress(BaseException):  # pytest.fail raises a BaseException
            slurm.cancel_all()
        slurm.processes.close()
        deadline = time.monotonic() + 30
        while (left := processes_of(conf)) and time.monotonic() < deadline:
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        shutil.rmtree(munge_dir, ignore_errors=True)
