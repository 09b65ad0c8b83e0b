"""``python -m genreflow.bench [--quick] [--json FILE] [--workdir DIR]``: issues 5 and 13, side by side.

This module stays light at import time on purpose: Dask and the process pools
start their workers with ``spawn``, which re-imports the main module in each of them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def _environment() -> None:
    """One BLAS thread per process everywhere, as Dask's nanny gives its workers.

    On 2 shared cores a multi-threaded OpenBLAS spins against the other
    process and turns a 1 ms matmul into tens of ms; with one thread each, the
    one-core sides and the worker sides compute alike. Prefect runs offline and
    quietly, with a throwaway home.
    """
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="genreflow-bench-prefect-"))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genreflow.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sets and few batches: under 5 minutes")
    parser.add_argument("--json", type=Path, metavar="FILE", help="write ratios, figures and machine here")
    parser.add_argument("--workdir", type=Path, metavar="DIR",
                        help="keep the generated demo set here and reuse it next time (default: a temp dir)")
    parser.add_argument("--only", choices=["library-predict", "incremental", "augmented", "library-incremental"],
                        help="run only this comparison (library-predict: issue 15's, about 10 minutes on 2 cores; "
                             "incremental: issue 12's, about 4; augmented: issue 13's, about 8; "
                             "library-incremental: issue 24's, about 6)")
    args = parser.parse_args(argv)
    _environment()
    from genreflow.bench.suite import main as run_suite

    return run_suite(quick=args.quick, json_path=args.json, workdir=args.workdir, only=args.only)


if __name__ == "__main__":
    sys.exit(main())
