"""TensorFlow's C++ start-up lines stay off the console unless the user asks for them."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import sys
from genreflow.model.quiet_tf import keras, tf
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
print(tuple(model(tf.zeros((1, 4))).shape))
print("genreflow-own-line", file=sys.stderr)
"""
# Lines TensorFlow's C++ side writes on a machine without a GPU (absl, CUDA stubs, cuInit).
NOISE = ("absl::InitializeLog", "cudart_stub", "cuInit", "cuda_")


def run(level: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300,
                          check=True)


def test_quiet_by_default_and_loud_when_asked() -> None:
    quiet = run(None)  # unset: genreflow sets level 3
    assert quiet.stdout.strip() == "(1, 2)"
    assert "genreflow-own-line" in quiet.stderr, "stderr works again after the import"
    noisy = [line for line in quiet.stderr.splitlines() if any(word in line for word in NOISE)]
    assert not noisy, noisy
    loud = run("0")  # the user's own choice wins
    assert "genreflow-own-line" in loud.stderr and len(loud.stderr) >= len(quiet.stderr)
