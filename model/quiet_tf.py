"""TensorFlow and Keras, imported once with TensorFlow's C++ start-up lines kept off the console.

TensorFlow prints absl and CUDA lines on import and on first use (on a machine
without a GPU, an ``E0000 ... failed call to cuInit`` among them) that bury
genreflow's own output. Unless the user has set ``TF_CPP_MIN_LOG_LEVEL``, it is
set to 3 here, before TensorFlow loads, in whichever process imports it (the
CLI, a Dask worker, a test); at level 3 the lines TensorFlow writes before its
logging starts, which that variable does not reach, are silenced too by
pointing file descriptor 2 at /dev/null for the import only. Set
``TF_CPP_MIN_LOG_LEVEL=0`` to see everything.

Every module of genreflow takes ``tf`` and ``keras`` from here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

QUIET_LEVEL = "3"


@contextmanager
def stderr_silenced() -> Iterator[None]:
    """Send whatever this process (C++ included) writes to stderr to /dev/null, then restore it."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _import() -> tuple[Any, Any]:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_LEVEL)
    quiet = os.environ["TF_CPP_MIN_LOG_LEVEL"] >= QUIET_LEVEL and "tensorflow" not in sys.modules
    with stderr_silenced() if quiet else nullcontext():
        import keras
        import tensorflow

    return tensorflow, keras


tf, keras = _import()
