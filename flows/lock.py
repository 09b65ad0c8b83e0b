"""One run at a time per data root: an OS file lock that dies with its process."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from genreflow.storage.errors import GenreflowError
from genreflow.storage.root import DataRoot

LOCK_NAME = ".genreflow.lock"


class DataRootLocked(GenreflowError, RuntimeError):
    """Another genreflow run holds the data root."""


@contextmanager
def data_root_lock(root: DataRoot | str) -> Iterator[None]:
    """Hold the data root's lock for the block, or raise DataRootLocked at once.

    flock is released by the kernel when the holder dies, even by kill -9, so a
    crashed run never leaves a stale lock. Object stores have no such lock:
    there the deployment's concurrency limit is what keeps runs apart.
    ``root``: the flow's own DataRoot, or a URL.
    """
    root = as_root(root)
    if not root.is_local:
        logging.getLogger("genreflow").warning(
            "data root %s is not local: no file lock; rely on the deployment concurrency limit", root.url)
        yield
        return
    root.ensure_writable()
    path = root.join(LOCK_NAME)
    handle = open(path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise _refusal(root, handle.read()) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}))
        handle.flush()
        yield
    finally:
        handle.close()


def check_unlocked(root: DataRoot | str) -> None:
    """Raise DataRootLocked now if another run holds the data root; hold nothing.

    Called before a run starts its Prefect API and Dask workers, so a second run
    is refused in a second rather than after its start-up; the flow then takes
    the lock for real (a run that slips in between is still refused there).
    """
    root = as_root(root)
    path = root.join(LOCK_NAME)
    if not root.is_local or not os.path.exists(path):
        return
    with open(path) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refusal(root, handle.read()) from None


def lock_holder(root: DataRoot | str) -> str | None:
    """What the run holding the data root's lock recorded (pid, host, since), or None when no run holds it.

    Takes no lock, not even a shared one for an instant, and writes nothing: ``status`` calls it while a
    rebuild may be starting, and a shared lock then would refuse that rebuild. It reads the kernel's table
    of flock locks (Linux's /proc/locks); elsewhere, or on an object store, it says None.
    """
    root = as_root(root)
    path = root.join(LOCK_NAME)
    if not root.is_local or not os.path.exists(path):
        return None
    try:
        st = os.stat(path)
        with open("/proc/locks") as table:
            held = any(_locks(line, st) for line in table)
        if not held:
            return None
        with open(path) as handle:
            return handle.read().strip() or "unknown holder"
    except OSError:
        return None


def _locks(line: str, st: os.stat_result) -> bool:
    """Whether a /proc/locks line ("1: FLOCK  ADVISORY  WRITE 1234 fe:00:2990316 0 EOF") is an exclusive flock
    on the file ``st`` describes (device as hex major:minor, then the inode)."""
    fields = line.split()
    if len(fields) < 6 or fields[1] != "FLOCK" or fields[3] != "WRITE":
        return False
    major, minor, inode = [*fields[5].split(":"), "", "", ""][:3]
    try:
        return (int(inode) == st.st_ino and int(major, 16) == os.major(st.st_dev)
                and int(minor, 16) == os.minor(st.st_dev))
    except ValueError:
        return False


def as_root(root: DataRoot | str) -> DataRoot:
    """The DataRoot a caller holds, or one for a URL: a flow passes its own rather than rebuilding it."""
    return root if isinstance(root, DataRoot) else DataRoot(root)


def _refusal(root: DataRoot, holder: str) -> DataRootLocked:
    """The one message for a held data root, naming the holder that the lock file records."""
    return DataRootLocked(f"data root {root.path} is in use by another genreflow run "
                          f"({holder.strip() or 'unknown holder'}); wait for it to finish or use another --data-root")
