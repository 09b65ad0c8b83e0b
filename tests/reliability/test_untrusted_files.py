"""Issue 6.6: files from outside the process are never unpickled, and models load only through Keras' safe mode.

A source scan (AST, not grep, so comments and strings do not count) holds every
module of the package to the rules; behavioural tests show that a shard or a
model crafted to run code is refused without running it.
tests/storage/test_root.py checks DataRoot.read_npy alone on a pickled .npy.
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from genreflow.flows.cli import main
from tests.reliability.conftest import cli_flags, copy_root

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("flows", "tasks", "model", "storage", "bench", "deploy")
# The pipeline's packages must say allow_pickle=False at every np.load; bench/ (measurements on files it
# wrote itself) may rely on numpy's default, which is also False, but must never switch it on.
EXPLICIT = ("flows", "tasks", "model", "storage", "deploy")

# Calls that would deserialise pickled (or otherwise executable) data from a file or bytes.
FORBIDDEN = {
    ("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("cPickle", "load"), ("cPickle", "loads"),
    ("dill", "load"), ("dill", "loads"), ("cloudpickle", "load"), ("cloudpickle", "loads"), ("joblib", "load"),
    ("marshal", "load"), ("marshal", "loads"), ("shelve", "open"), ("pd", "read_pickle"), ("pandas", "read_pickle"),
    ("torch", "load"), ("yaml", "load"), ("yaml", "unsafe_load"), ("yaml", "full_load"), ("saved_model", "load"),
}
# Functions that may load what this same process has just written to its own scratch folder, never a file
# from outside: `genreflow export` runs the SavedModel it staged in a fresh temporary folder through
# tf.saved_model.load to verify it, before moving it to its destination.
OWN_OUTPUT_LOADERS = {("model/export.py", "run_savedmodel")}


def source_files() -> list[Path]:
    return sorted(p for package in PACKAGES if (REPO / package).is_dir() for p in (REPO / package).rglob("*.py"))


def dotted(node: ast.AST) -> str:
    """``np.lib.format.read_array`` for an attribute chain, ``eval`` for a name."""
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return "?"


def keyword(call: ast.Call, name: str) -> object:
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<not a constant>"
    return "<absent>"


def scan() -> tuple[list[str], dict[str, int]]:
    """(violations as 'file:line: what', counts of the guarded calls found)."""
    problems: list[str] = []
    found = {"np.load": 0, "load_model": 0, "own_output_load": 0}
    for path in source_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        owner = {id(node): function.name for function in ast.walk(tree)
                 if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)) for node in ast.walk(function)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = dotted(node.func)
            parts = name.split(".")
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if name in ("np.load", "numpy.load", "np.lib.format.read_array", "numpy.lib.format.read_array"):
                found["np.load"] += 1
                allow = keyword(node, "allow_pickle")
                explicit = path.relative_to(REPO).parts[0] in EXPLICIT
                if allow is not False and (explicit or allow != "<absent>"):
                    problems.append(f"{where}: {name} without allow_pickle=False")
            elif parts[-1] == "load_model":
                found["load_model"] += 1
                if keyword(node, "safe_mode") is not True:
                    problems.append(f"{where}: {name} without safe_mode=True")
            elif len(parts) >= 2 and (parts[-2], parts[-1]) in FORBIDDEN:
                if (str(path.relative_to(REPO)), owner.get(id(node))) in OWN_OUTPUT_LOADERS:
                    found["own_output_load"] += 1
                    continue
                problems.append(f"{where}: {name} deserialises untrusted data")
            elif name in ("eval", "exec"):
                problems.append(f"{where}: {name}")
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for module in modules:
                    if module.split(".")[0] in ("pickle", "cPickle", "dill", "cloudpickle", "shelve", "marshal"):
                        problems.append(f"{path.relative_to(REPO)}:{node.lineno}: imports {module}")
    return problems, found


def test_source_never_unpickles_and_loads_models_in_safe_mode() -> None:
    problems, found = scan()
    assert problems == []
    # The scan saw the real call sites: shards, best weights and the dataset reader; the model loader.
    assert found["np.load"] >= 3 and found["load_model"] >= 1
    assert found["own_output_load"] == len(OWN_OUTPUT_LOADERS)  # the exemption names live call sites only


def test_the_scan_catches_what_it_forbids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "flows"
    bad.mkdir()
    (bad / "bad.py").write_text(
        "import pickle\nimport numpy as np\nimport keras\nimport yaml\n"
        "a = np.load('x.npy')\nb = np.load('y.npy', allow_pickle=True)\n"
        "c = keras.saving.load_model('m.keras')\nd = pickle.loads(b'')\ne = yaml.load('')\n"
        "def run_savedmodel(path):\n    return tf.saved_model.load(path)\n"  # exempt in model/export.py only
    )
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    problems, _ = scan()
    assert len(problems) == 7, problems


class _Payload:
    """Unpickling this creates ``marker``: proof that a file's code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def evil_npy(path: Path, marker: Path) -> None:
    np.save(path, np.array([_Payload(marker)], dtype=object), allow_pickle=True)


def test_object_array_shard_with_a_forged_manifest_is_refused_unread(
    tmp_path: Path, preprocessed_root: Path, demo_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Someone who can write the data root swaps a shard for pickled objects and fixes its manifest to match."""
    root = copy_root(preprocessed_root, tmp_path / "root")
    marker = tmp_path / "code-ran"
    shard = root / "mel" / "train-0000.npy"
    evil_npy(shard, marker)
    manifest_path = root / "mel" / "train-0000.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["train-0000.npy"] = {"size": shard.stat().st_size,
                                           "checksum": hashlib.blake2b(shard.read_bytes(), digest_size=16).hexdigest()}
    manifest_path.write_text(json.dumps(manifest))

    code = main(["train", *cli_flags(root, demo_dir), "--to-stage", "stats"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"{shard} holds Python objects (pickled data): refused" in err.strip().splitlines()[-1]
    assert not marker.exists()


def test_training_input_refuses_an_object_array(tmp_path: Path) -> None:
    import pandas as pd

    from genreflow.model.dataset import ClipSource, DatasetError, clip_dataset

    marker = tmp_path / "code-ran"
    evil_npy(tmp_path / "evil.npy", marker)
    source = ClipSource(tmp_path / "evil.npy", pd.DataFrame({"row": [0], "genre": ["Rock"]}))
    with pytest.raises(DatasetError, match="holds Python objects"):
        clip_dataset([source], {"Rock": 0}, batch_size=1, shuffle=True, seed=0)
    assert not marker.exists()


def test_a_model_that_would_run_code_is_refused_by_safe_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A .keras file with a Lambda layer carries Python bytecode; safe mode refuses to deserialise it."""
    import keras

    marker = tmp_path / "code-ran"
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)  # in a real attack: any code at all
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    keras.Model(inputs, outputs).save(model_dir / "model.keras")
    (model_dir / "labels.json").write_text('["a", "b", "c", "d"]')
    song = tmp_path / "song.wav"
    song.write_bytes(b"")

    code = main(["predict", str(song), "--model", str(model_dir)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("genreflow")]
    assert code == 1 and len(err) == 1
    assert f"cannot load {model_dir / 'model.keras'} (safe mode)" in err[0] and "Lambda" in err[0]
    assert not marker.exists()

    (model_dir / "model.h5").write_bytes(b"")
    (model_dir / "model.keras").unlink()
    code = main(["predict", str(song), "--model", str(model_dir / "model.h5")])
    assert code == 1 and "no model.keras" in capsys.readouterr().err  # only .keras files are ever loaded
