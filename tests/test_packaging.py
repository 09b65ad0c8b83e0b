"""genreflow installs under one import name, so a user's own model.py or tasks/ cannot shadow it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DECOY = "raise SystemExit('the decoy was imported')\n"


def test_decoy_model_and_tasks_in_the_working_directory_do_not_shadow_genreflow(tmp_path: Path) -> None:
    (tmp_path / "model.py").write_text(DECOY)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "__init__.py").write_text(DECOY)
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "__init__.py").write_text(DECOY)
    code = (
        "import genreflow.model.cnn, genreflow.tasks.shard, genreflow.flows.cli, genreflow.storage.root\n"
        "import importlib.util, os\n"
        # the decoys are really on the path: a bare import would find them
        "assert importlib.util.find_spec('model').origin == os.path.abspath('model.py')\n"
        "print(genreflow.tasks.shard.__file__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).parent.name == "tasks"
    assert Path(done.stdout.strip()).parent.parent != tmp_path


def test_no_top_level_package_but_genreflow_is_installed(tmp_path: Path) -> None:
    """From a neutral directory, none of the old top-level names resolves."""
    code = "import importlib.util\nprint([n for n in ('flows', 'tasks', 'model', 'storage', 'bench') " \
           "if importlib.util.find_spec(n)])"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
