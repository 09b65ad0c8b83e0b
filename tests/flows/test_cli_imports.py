"""``genreflow --help`` costs no TensorFlow, Prefect nor scikit-learn: each takes seconds to import (issue 20)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("tensorflow", "prefect", "sklearn")

PROBE = """
import json, sys
from genreflow.flows.cli import main
try:
    main([{args}])
except SystemExit:
    pass
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}})))
"""


def loaded_after(*args: str) -> set[str]:
    """The top-level modules a fresh interpreter holds after ``genreflow ARGS`` (argparse exits on --help)."""
    code = PROBE.format(args=", ".join(map(repr, args)))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_help_imports_no_heavy_library() -> None:
    assert not set(HEAVY) & loaded_after("--help")


def test_predict_and_export_help_import_no_heavy_library() -> None:
    """The subcommands a user runs most often without a cluster: their flags alone load none of it either."""
    assert not set(HEAVY) & loaded_after("predict", "--help")
    assert not set(HEAVY) & loaded_after("export", "--help")
