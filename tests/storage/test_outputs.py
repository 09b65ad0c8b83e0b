"""The one output protocol: path scheme, skip decision, fingerprint, sealing, and why an output went stale."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from genreflow.storage.manifest import Manifest, read_manifest
from genreflow.storage.outputs import (
    LAYOUT,
    OutputSpec,
    done_manifest,
    manifest_path,
    open_output,
    output_location,
    output_path,
    staleness,
    state_of,
)
from genreflow.storage.root import DataRoot, StorageError


@pytest.fixture(params=["local", "memory"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DataRoot]:
    if request.param == "local":
        yield DataRoot(str(tmp_path / "data"))
    else:
        memory = DataRoot(f"memory://genreflow-test-{uuid.uuid4().hex}/data")
        yield memory
        memory.remove(memory.path, recursive=True)


def stats(inputs: object = "a", code: str = "v1") -> OutputSpec:
    return OutputSpec("stats", code=code, inputs=inputs, params={"chunk": 256})


def test_every_output_has_one_place(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    base = str(tmp_path)
    expected = {
        ("ingest", "", ".parquet"): "tracks.parquet",
        ("ingest", "", ".skipped.parquet"): "tracks.skipped.parquet",
        ("decode", "train-0003", ".npy"): "decode/train-0003.npy",
        ("mel", "val-0000", ".parquet"): "mel/val-0000.parquet",
        ("augment", "train-0000", ".npy"): "augment/train-0000.npy",
        ("stats", "", ".json"): "stats.json",
        ("baseline", "0123abcd", "metrics.json"): "baseline/0123abcd/metrics.json",
        ("train", "run-1", "model.keras"): "models/run-1/model.keras",
        ("train", "cv-1/fold-2", "model.keras"): "models/cv-1/fold-2/model.keras",
        ("evaluate", "run-1", "predictions.parquet"): "reports/run-1/predictions.parquet",
        ("report", "run-1", ".md"): "reports/run-1/report.md",
        ("fold", "cv-1/fold-2", ".json"): "reports/cv-1/fold-2.json",
        ("crossval", "cv-1", ".html"): "reports/cv-1/crossval.html",
    }
    for (stage, key, name), path in expected.items():
        assert output_path(root, stage, key, name) == f"{base}/{path}"
    manifests = {("ingest", ""): "tracks.manifest.json", ("mel", "train-0000"): "mel/train-0000.manifest.json",
                 ("stats", ""): "stats.manifest.json", ("train", "run-1"): "models/run-1/manifest.json",
                 ("evaluate", "run-1"): "reports/run-1/evaluate.manifest.json",
                 ("report", "run-1"): "reports/run-1/report.manifest.json",
                 ("fold", "cv-1/fold-2"): "reports/cv-1/fold-2.manifest.json"}
    for (stage, key), path in manifests.items():
        assert manifest_path(root, stage, key) == f"{base}/{path}"
    # Outputs that share a folder never share a manifest.
    shared = [manifest_path(root, stage, "run-1") for stage in ("evaluate", "report")]
    assert len(set(shared)) == 2 and set(LAYOUT) >= {stage for stage, _, _ in expected}


def test_keys_that_would_leave_their_folder_are_refused(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    for key in ("../x", "a/../../b", "/abs", "a//b"):
        with pytest.raises(StorageError, match="not a relative name"):
            output_location(root, "train", key)
    with pytest.raises(ValueError, match="unknown stage output 'audio'"):
        OutputSpec("audio", "s0")


def test_fingerprint_is_stage_code_inputs_and_params_but_not_the_key() -> None:
    base = stats()
    assert base.fingerprint == stats().fingerprint
    assert base.with_key("other").fingerprint == base.fingerprint
    assert len({base.fingerprint, stats(inputs="b").fingerprint, stats(code="v2").fingerprint,
                OutputSpec("stats", code="v1", inputs="a", params={"chunk": 128}).fingerprint,
                OutputSpec("mel", code="v1", inputs="a", params={"chunk": 256}).fingerprint}) == 5


def test_write_then_done_then_skipped(root: DataRoot) -> None:
    with open_output(root, stats()) as out:
        assert not out.done
        out.write_json(".json", {"clips": 3})
        out.rows, out.extra = 3, {"note": "x"}
    manifest = read_manifest(root, out.manifest_path)
    assert manifest is not None and manifest.name == "stats" and manifest.code == "v1"
    assert manifest.fingerprint == stats().fingerprint and manifest.rows == 3 and set(manifest.files) == {"stats.json"}
    assert state_of(root, stats()) == "done"
    with open_output(root, stats()) as again:
        assert again.done and again.rows == 3 and again.extra == {"note": "x"}
        assert again.read_json(".json") == {"clips": 3}
        with pytest.raises(StorageError, match="already done"):
            again.write_json(".json", {"clips": 4})
    assert root.read_json(out.path(".json")) == {"clips": 3}


def test_force_rewrites_a_done_output(root: DataRoot) -> None:
    for clips in (3, 4):
        with open_output(root, stats(), force=True) as out:
            assert not out.done
            out.write_json(".json", {"clips": clips})
    assert root.read_json(out.path(".json")) == {"clips": 4} and state_of(root, stats()) == "done"


def test_a_failed_write_leaves_no_manifest_and_the_old_one_is_gone(root: DataRoot) -> None:
    with open_output(root, stats()) as out:
        out.write_json(".json", {"clips": 3})
    with pytest.raises(RuntimeError, match="boom"), open_output(root, stats(inputs="b")) as out:
        out.write_json(".json", {"clips": 4})
        raise RuntimeError("boom")
    assert state_of(root, stats()) == "missing" and state_of(root, stats(inputs="b")) == "missing"


def test_a_file_left_out_of_the_manifest_is_not_trusted(root: DataRoot) -> None:
    with open_output(root, OutputSpec("train", "run-1", inputs="a")) as out:
        root.write_bytes(out.path("model.keras"), b"weights")  # written, but never recorded with out.add
    manifest = out.manifest()
    assert manifest is not None and manifest.files == {}
    with open_output(root, OutputSpec("train", "run-2", inputs="a")) as out:
        root.write_bytes(out.add("model.keras"), b"weights")
    assert set(out.manifest().files) == {"model.keras"}  # type: ignore[union-attr]
    root.write_bytes(out.path("model.keras"), b"altered")
    assert state_of(root, OutputSpec("train", "run-2", inputs="a")) == "corrupt"


def test_done_manifest_and_read_sealed_parquet_trust_only_what_is_intact(root: DataRoot) -> None:
    import pandas as pd

    from genreflow.storage.outputs import read_sealed_parquet

    assert done_manifest(root, stats()) is None and read_sealed_parquet(root, "ingest", "", ".parquet") is None
    with open_output(root, stats()) as out:
        out.write_json(".json", {"clips": 3})
        out.rows = 3
    found = done_manifest(root, stats())
    assert found is not None and found.rows == 3 and found == read_manifest(root, out.manifest_path)
    assert done_manifest(root, stats(inputs="b")) is None  # stale
    with open_output(root, OutputSpec("ingest", inputs="t")) as tracks:
        tracks.write_parquet(".parquet", pd.DataFrame({"track_id": ["a", "b"]}))
    assert read_sealed_parquet(root, "ingest", "", ".parquet")["track_id"].tolist() == ["a", "b"]
    root.write_json(out.path(".json"), {"clips": 4})  # altered after sealing
    root.write_bytes(tracks.path(".parquet"), b"PAR1 cut short")
    assert done_manifest(root, stats()) is None and read_sealed_parquet(root, "ingest", "", ".parquet") is None


def test_staleness_tells_code_from_inputs(root: DataRoot) -> None:
    with open_output(root, stats()) as out:
        out.write_json(".json", {})
    assert staleness(root, stats()) is None
    assert (state_of(root, stats(code="v2")), staleness(root, stats(code="v2"))) == ("stale", "code")
    assert (state_of(root, stats(inputs="b")), staleness(root, stats(inputs="b"))) == ("stale", "inputs")
    assert staleness(root, OutputSpec("mel", "nothing-here")) is None


def test_killed_writes_leave_temp_files_that_the_next_write_removes(root: DataRoot) -> None:
    spec = OutputSpec("evaluate", "run-1", inputs="a")
    leftovers = [output_path(root, "evaluate", "run-1", "predictions.parquet") + ".tmp-deadbeef",
                 manifest_path(root, "evaluate", "run-1") + ".tmp-0badf00d"]
    unrelated = output_path(root, "report", "run-1", ".md") + ".tmp-deadbeef"
    for path in [*leftovers, unrelated]:
        root.write_bytes(path, b"half")
    with open_output(root, spec) as out:
        out.write_bytes("predictions.parquet", b"table")
    assert not any(root.exists(path) for path in leftovers)
    assert root.exists(unrelated)


def test_outputs_of_genreflow_0_1_are_removed_and_nothing_else(root: DataRoot) -> None:
    from genreflow.storage.outputs import remove_legacy_outputs

    for path in ("audio/train-0000.npy", "mel-aug/train-0000.npy", "ingest-skipped.parquet", "mel/train-0000.npy",
                 "tracks.parquet", "models/LATEST"):
        root.write_bytes(root.join(path), b"x")
    assert remove_legacy_outputs(root) == ["audio", "mel-aug", "ingest-skipped.parquet"]
    assert not root.exists(root.join("audio")) and not root.exists(root.join("mel-aug"))
    assert all(root.exists(root.join(p)) for p in ("mel/train-0000.npy", "tracks.parquet", "models/LATEST"))
    assert remove_legacy_outputs(root) == []


def test_library_versions_are_recorded_beside_the_fingerprint_and_compared(root: DataRoot) -> None:
    from genreflow.storage.outputs import dependency_changes

    made = OutputSpec("stats", code="v1", inputs="a", params={"chunk": 256},
                      libraries={"numpy": "2.0.0", "librosa": "0.10.2"})
    assert made.fingerprint == stats().fingerprint and made.library_versions == {"librosa": "0.10.2", "numpy": "2.0.0"}
    assert made.with_key("other").libraries == made.libraries
    with open_output(root, made) as out:
        out.write_json(".json", {"clips": 3})
    manifest = read_manifest(root, out.manifest_path)
    assert manifest is not None and manifest.libraries == {"librosa": "0.10.2", "numpy": "2.0.0"}
    assert state_of(root, made) == "done" and staleness(root, made) is None

    upgraded = OutputSpec("stats", code="v1", inputs="a", params={"chunk": 256},
                          libraries={"numpy": "2.0.0", "librosa": "0.11.0"})
    assert (state_of(root, upgraded), staleness(root, upgraded)) == ("stale", "dependencies")
    assert dependency_changes(root, upgraded) == {"librosa": ("0.10.2", "0.11.0")}
    assert done_manifest(root, upgraded) is None
    assert staleness(root, stats(code="v2")) == "code"  # a changed fingerprint is said first
    with open_output(root, upgraded) as again:
        assert not again.done
        again.write_json(".json", {"clips": 3})
    assert read_manifest(root, out.manifest_path).libraries["librosa"] == "0.11.0"  # type: ignore[union-attr]
    assert state_of(root, made) == "stale" and state_of(root, upgraded) == "done"


def test_a_manifest_without_versions_is_adopted_and_gains_them_at_the_rebuilds_check(root: DataRoot) -> None:
    """An earlier genreflow recorded no versions: its output is done as it is, and the first rebuild that finds it
    done writes the installed versions into its manifest, so a later upgrade of a library makes it stale."""
    with open_output(root, stats()) as out:  # as an earlier genreflow wrote it
        out.write_json(".json", {"clips": 3})
    before = root.read_bytes(out.manifest_path)
    assert read_manifest(root, out.manifest_path).libraries == {}  # type: ignore[union-attr]
    current = OutputSpec("stats", code="v1", inputs="a", params={"chunk": 256}, libraries={"numpy": "2.0.0"})
    assert state_of(root, current) == "done" and staleness(root, current) is None
    assert root.read_bytes(out.manifest_path) == before  # status only reads
    with open_output(root, current) as again:
        assert again.done
    adopted = read_manifest(root, out.manifest_path)
    assert adopted is not None and adopted.libraries == {"numpy": "2.0.0"}
    # Only the versions are added: the files, their checksums and the time it was sealed are the same.
    assert adopted.model_dump(exclude={"libraries"}) == Manifest.model_validate_json(before).model_dump(
        exclude={"libraries"})
    assert state_of(root, current) == "done"
    # A library declared later is adopted the same way; one recorded at another version is not.
    more = OutputSpec("stats", code="v1", inputs="a", params={"chunk": 256},
                      libraries={"numpy": "2.0.0", "scipy": "1.13.0"})
    assert done_manifest(root, more) is not None
    versions = read_manifest(root, out.manifest_path).libraries  # type: ignore[union-attr]
    assert versions == {"numpy": "2.0.0", "scipy": "1.13.0"}
    newer = OutputSpec("stats", code="v1", inputs="a", params={"chunk": 256}, libraries={"numpy": "2.1.0"})
    assert state_of(root, newer) == "stale" and done_manifest(root, newer) is None
