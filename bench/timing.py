"""Measurement helpers: repeated timings, peak RSS of a child process, the machine's description.

The benchmark machine is shared and noisy, so every comparison runs its sides
back to back, repeats them, and reports the best (least disturbed) repeat next
to the median.

Peak RSS of a child is its kernel high-water mark ``VmHWM``, polled from
``/proc/<pid>/status`` while it runs. ``getrusage``'s ``ru_maxrss`` cannot be
used on Linux: a child's figure starts at its parent's RSS at the fork (the
memory it shared before ``exec``), and ``RUSAGE_CHILDREN`` is moreover the
largest of all children so far.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any


@dataclass(frozen=True)
class Timing:
    """Wall times of repeats of one measured call, in seconds."""

    times: tuple[float, ...]

    @property
    def best(self) -> float:
        return min(self.times)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def as_dict(self) -> dict[str, Any]:
        return {"best_s": self.best, "median_s": self.median, "repeats_s": list(self.times)}


def cpu_snapshot() -> dict[str, float]:
    """CPU seconds (user + system) used so far by this process, by its Prefect API server child,
    and by all its other descendants (Dask nannies and workers, pool processes).

    Differences of two snapshots show where a run's CPU went: on a shared
    2-core machine the orchestration's own CPU competes with the workers'.
    """
    import psutil

    me = psutil.Process()
    times = me.cpu_times()
    out = {"main": times.user + times.system, "api": 0.0, "workers": 0.0}
    for child in me.children(recursive=True):
        try:
            times = child.cpu_times()
            role = "api" if "uvicorn" in " ".join(child.cmdline()) else "workers"
        except psutil.Error:  # exited in the meantime
            continue
        out[role] += times.user + times.system
    return out


@dataclass
class Recorder:
    """Collects the timings of several named sides that run interleaved, one round at a time.

    With ``cpu`` it also records, per run, the CPU seconds used by this
    process, the Prefect API server and the worker processes (cpu_snapshot).
    """

    times: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[dict[str, float]]] | None = None

    def time(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` once, add its wall time to ``name``'s repeats, return its result."""
        before = cpu_snapshot() if self.cpu is not None else None
        start = time.perf_counter()
        result = fn()
        self.times.setdefault(name, []).append(time.perf_counter() - start)
        if self.cpu is not None and before is not None:
            after = cpu_snapshot()
            self.cpu.setdefault(name, []).append({k: max(0.0, after[k] - before[k]) for k in after})
        return result

    def timing(self, name: str) -> Timing:
        return Timing(tuple(self.times[name]))


def repeat_timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``repeats`` times timed."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        fn()
    recorder = Recorder()
    for _ in range(repeats):
        recorder.time("fn", fn)
    return recorder.timing("fn")


def interleaved(sides: dict[str, Callable[[], Any]], rounds: int, warmup: bool = True) -> dict[str, Timing]:
    """Time several sides round-robin (A B C, A B C, ...) so drifting load hits all alike.

    With ``warmup`` each side runs once untimed first (imports, numba, page cache).
    """
    if warmup:
        for fn in sides.values():
            fn()
    recorder = Recorder()
    for _ in range(rounds):
        for name, fn in sides.items():
            recorder.time(name, fn)
    return {name: recorder.timing(name) for name in sides}


@dataclass(frozen=True)
class ChildRun:
    """A finished child process: its stdout, exit status, peak RSS and wall time."""

    stdout: str
    returncode: int
    peak_rss_bytes: int
    wall_s: float


def _vm_hwm_bytes(pid: int) -> int | None:
    """The process's peak resident set (VmHWM) in bytes; None where /proc does not say."""
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def run_child(cmd: Sequence[str], env: dict[str, str] | None = None, timeout: float = 1800.0,
              poll_s: float = 0.01) -> ChildRun:
    """Run ``cmd`` and measure its peak RSS and wall time.

    The peak is the last VmHWM read before the child exits (read every
    ``poll_s``); where /proc is missing, ``ru_maxrss`` from ``os.wait4``.
    Raises RuntimeError with the child's stderr tail when it fails.
    """
    peak: int | None = None
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=env, text=True)
        deadline = start + timeout
        while True:
            hwm = _vm_hwm_bytes(proc.pid)
            if hwm is not None:
                peak = hwm if peak is None else max(peak, hwm)
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(poll_s)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited with {proc.returncode}:\n{tail}")
    if peak is None:  # no /proc: ru_maxrss, in KiB on Linux and BSD, bytes on macOS
        peak = int(usage.ru_maxrss) * (1 if sys.platform == "darwin" else 1024)
    return ChildRun(stdout, proc.returncode, peak, wall)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on; the load average tells how shared the machine was."""
    from genreflow.flows.runner import usable_cores  # Prefect and Dask: not for every bench module that times

    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable_cores(),
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "versions": {name: _version(name) for name in
                     ("numpy", "scipy", "librosa", "soundfile", "soxr", "tensorflow", "keras", "prefect",
                      "prefect-dask", "dask", "distributed")},
        "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
    }
