"""Test-wide settings: Prefect offline with a throwaway home, TensorFlow quiet, an empty weights cache."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="genreflow-prefect-home-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
# No test sees the user's pretrained weights unless it asks for them (model.weights.user_weights_dir): a flow
# would otherwise train the embedding model wherever `genreflow weights fetch musicnn` has run.
os.environ["GENREFLOW_WEIGHTS_DIR"] = tempfile.mkdtemp(prefix="genreflow-weights-")

# Prefect before any test module imports TensorFlow: Prefect's logging set-up closes the handlers it finds, absl's
# among them, and absl's holds the sys.stderr of the moment it was made (pytest's capture). The CLI no longer
# imports Prefect (tests/flows/test_cli_imports.py), so importing it first can no longer do this.
import prefect  # noqa: F401
