"""The one base class of the errors a user can act on.

The CLI prints a GenreflowError as one line, without a traceback, and exits
non-zero; anything else is a bug and keeps its traceback. Each subclass also
keeps the builtin base it had (ValueError, RuntimeError, ...), so callers that
catch those still do.
"""

from __future__ import annotations


class GenreflowError(Exception):
    """A problem with the input, the configuration or the data root, told in one line."""
