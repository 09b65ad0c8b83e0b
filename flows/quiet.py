"""One line, not a traceback, for an error the user can act on, in the CLI's process and its Dask workers'.

Here rather than in flows/cli.py, so that the workers (flows/runner.py dask_setup) install it without
importing the CLI.
"""

from __future__ import annotations

import logging

from genreflow.storage.errors import GenreflowError, disk_full_error


class _UserErrorsWithoutTraceback(logging.Filter):
    """Drop the traceback from Prefect's console log of a task or flow that failed on a user error (a full disk
    among them, whatever wraps its OSError).

    ``main`` prints such an error as one line; two tracebacks above it (task, then
    flow) would bury it. Bugs keep their tracebacks, and the API log keeps all.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and (isinstance(error, GenreflowError) or disk_full_error(error) is not None):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_user_error_tracebacks() -> None:
    """Install the filter on the root logger's handlers (where Prefect's console handler sits); the Dask
    workers a flow starts install it too (flows/runner.py dask_setup)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _UserErrorsWithoutTraceback) for f in handler.filters):
            handler.addFilter(_UserErrorsWithoutTraceback())
