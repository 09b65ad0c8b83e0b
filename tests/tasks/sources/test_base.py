"""The base module stays cheap: flows/config.py imports SourceConfig from it for every ``genreflow --help``."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pandas", "numpy", "prefect", "tensorflow", "sklearn", "soundfile", "soxr", "requests")


def test_importing_the_package_loads_no_reader_and_no_heavy_library() -> None:
    code = ("import json, sys; from genreflow.tasks.sources import SourceConfig, clean_cell, is_blank; "
            f"print(json.dumps(sorted(m for m in {HEAVY!r} + ('genreflow.tasks.sources.fma', "
            "'genreflow.tasks.sources.folder', 'genreflow.tasks.sources.factory') if m in sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(done.stdout) == []


def test_blank_and_clean_cells() -> None:
    from genreflow.tasks.sources import clean_cell, is_blank

    assert [is_blank(v) for v in (None, "", "  ", float("nan"), "x", 0, [1, 2])] == [
        True, True, True, True, False, False, False]
    assert [clean_cell(v) for v in (None, " Rock ", float("nan"), 7)] == [None, "Rock", None, "7"]
