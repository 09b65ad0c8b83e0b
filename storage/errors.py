"""The one base class of the errors a user can act on.

The CLI prints a GenreflowError as one line, without a traceback, and exits
non-zero; anything else is a bug and keeps its traceback. Each subclass also
keeps the builtin base it had (ValueError, RuntimeError, ...), so callers that
catch those still do.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager


class GenreflowError(Exception):
    """A problem with the input, the configuration or the data root, told in one line."""


# ---- a full disk ---------------------------------------------------------------------------------------------
# The errnos of a write that found no room: the filesystem is full, or the user's quota is used up.
DISK_FULL_ERRNOS: frozenset[int] = frozenset({errno.ENOSPC, errno.EDQUOT})


class DiskFull(GenreflowError, OSError):
    """A write found the disk (or the user's quota) full: what was finished is kept, the rerun goes on from it."""


class NotEnoughSpace(DiskFull):
    """A stage that will clearly not fit in the free space, refused before it starts, with the estimate."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and not isinstance(exc, DiskFull) and exc.errno in DISK_FULL_ERRNOS


def disk_full_error(exc: BaseException) -> DiskFull | None:
    """The one-line DiskFull that ``exc`` is, or that caused it (its chain, a Dask or Prefect wrapper's cause,
    an exception group's members); None when no disk-full OSError is in it.

    The one place that words a full disk, so that a write in the flow, on a Dask worker or in the CLI's own
    process all read alike: the path (the OSError's filename), that the disk is full, and what to do.
    """
    seen: set[int] = set()
    pending = [exc]
    while pending:
        error = pending.pop(0)
        if error is None or id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, DiskFull):
            return error
        if isinstance(error, OSError) and is_disk_full(error):
            path = error.filename or "a file"
            what = "the disk quota is used up" if error.errno == errno.EDQUOT else "the disk is full"
            return DiskFull(f"cannot write {path}: {what} (no space left on device); free some space there and "
                            "rerun: finished outputs are kept, nothing half-written is")
        pending.extend([error.__cause__, error.__context__, *getattr(error, "exceptions", ())])
    return None


@contextmanager
def naming_path(path: object) -> Iterator[None]:
    """Give a disk-full OSError raised in the block ``path`` as its filename when it has none.

    A write to an open file (``handle.write``, ``np.save``, Keras' zip) raises ENOSPC without a file name;
    the caller knows it, and the user needs it to know which disk to free.
    """
    try:
        yield
    except OSError as exc:
        if is_disk_full(exc) and not exc.filename:
            exc.filename = str(path)
        raise
