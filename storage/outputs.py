"""Stage outputs: one path scheme, one skip decision, one fingerprint and one manifest for every stage.

In the manner of a Dagster IO manager or a Hugging Face datasets writer, every
stage writes through :func:`open_output`::

    spec = OutputSpec("stats", code=..., inputs=[...], params={...})
    with open_output(root, spec, force) as out:
        if out.done:
            return out.read_json(".json")
        out.write_json(".json", compute())
        out.rows = ...

- **Where**: :data:`LAYOUT` maps a stage and key to a folder and a file stem,
  the only place that knows the data root's layout. A name that starts with a
  dot is a suffix of the stem (``mel/train-0000.npy``); any other name is a
  file in the output's folder (``models/run-1/model.keras``).
- **Done**: the output's manifest exists, records the spec's fingerprint and
  every file still has its size and checksum. Then ``out.done`` is true and
  nothing is written.
- **Fingerprint**: a hash of the stage, the version of its code, its inputs
  (upstream fingerprints or content hashes) and its parameters, as in
  huggingface/datasets. The manifest records the code version on its own too,
  so a stale output can say whether its inputs or its code changed.
- **Libraries**: the installed versions of the libraries whose numerics make
  the stage's output (``spec.libraries``, tasks/stages.py) are recorded in the
  manifest beside the fingerprint, not hashed into it, and an output made with
  another version of one is stale. A manifest that records no version of a
  library (an earlier genreflow's) is adopted as made with the installed one,
  and gains it the first time a rebuild finds the output done
  (:func:`done_manifest`), so upgrading genreflow recomputes nothing and a later
  upgrade of the library is seen.
- **Sealing**: the old manifest is removed before the first file is written and
  the new one is written last, only if the block succeeds. A crash at any
  moment leaves either a complete, verified output or one the next run redoes.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np
import pandas as pd

from genreflow.storage.fingerprint import fingerprint
from genreflow.storage.manifest import (
    Manifest,
    files_intact,
    library_changes,
    output_state,
    read_manifest,
    write_manifest,
)
from genreflow.storage.root import DataRoot, StorageError

# stage -> (folder, stem) templates. {key} is the output's key; {parent} and {leaf} are the key split at
# its last "/" (a fold "cv-1a2b/fold-3" of a cross-validation). A stem of "" means the output owns its folder.
LAYOUT: dict[str, tuple[str, str]] = {
    "ingest": ("", "tracks"),
    "decode": ("decode", "{key}"),
    "mel": ("mel", "{key}"),
    "augment": ("augment", "{key}"),
    "embed": ("embed", "{key}"),
    "stats": ("", "stats"),
    "baseline": ("baseline/{key}", ""),
    "train": ("models/{key}", ""),
    "evaluate": ("reports/{key}", "evaluate"),
    "promote": ("reports/{key}", "promotion"),
    "report": ("reports/{key}", "report"),
    "fold": ("reports/{parent}", "{leaf}"),
    "crossval": ("reports/{key}", "crossval"),
    # Not under the data root: a prediction run's shards, in a work root of their own beside the --out table
    # (tasks/predict.py); the key is "<run id>/<shard>", so each run's shards share one folder.
    "predict": ("{parent}", "{leaf}"),
}
# What each rebuild did (tasks/changes.py), for the next one to compare with.
LAST_REBUILD_FILE = "rebuilds/last.json"
# File names of the ingest output: tracks.parquet, and the listed tracks it left out, with the reason.
TRACKS_TABLE, SKIPPED_TABLE = ".parquet", ".skipped.parquet"
# Shard stages: one output per shard, their files side by side in the stage's folder.
SHARD_STAGES: tuple[str, ...] = ("decode", "mel", "augment", "embed")

Staleness = Literal["code", "inputs", "dependencies"]


@dataclass(frozen=True)
class OutputSpec:
    """What an output is (stage and key) and what makes it (code version, inputs, parameters).

    ``inputs`` are the fingerprints of the outputs it reads, or a content hash of
    what it reads from outside the data root; ``params`` anything JSON-like
    (pydantic models are dumped). The key is a name, not part of the fingerprint.
    ``libraries`` ({library: installed version}, kept as sorted pairs) are not in
    the fingerprint either: the manifest records them and done compares them
    apart (see the module docstring).
    """

    stage: str
    key: str = ""
    code: str = ""
    inputs: Any = ()
    params: Any = None
    libraries: Mapping[str, str] | tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.stage not in LAYOUT:
            raise ValueError(f"unknown stage output {self.stage!r}; known: {', '.join(LAYOUT)}")
        object.__setattr__(self, "libraries", tuple(sorted(dict(self.libraries).items())))

    @property
    def library_versions(self) -> dict[str, str]:
        return dict(self.libraries)

    @cached_property
    def fingerprint(self) -> str:
        return fingerprint(self.stage, self.code, self.inputs, self.params)

    def with_key(self, key: str) -> OutputSpec:
        return OutputSpec(self.stage, key, self.code, self.inputs, self.params, self.libraries)

    @property
    def name(self) -> str:
        return f"{self.stage}/{self.key}" if self.key else self.stage


def output_location(root: DataRoot, stage: str, key: str = "") -> tuple[str, str]:
    """(folder path, stem) of the output ``key`` of ``stage``: the data root's one path scheme."""
    if stage not in LAYOUT:
        raise ValueError(f"unknown stage output {stage!r}; known: {', '.join(LAYOUT)}")
    if key and any(part in ("", ".", "..") for part in key.split("/")):
        raise StorageError(f"output key {key!r} of {stage} is not a relative name")
    parent, _, leaf = key.rpartition("/")
    folder, stem = (template.format(key=key, parent=parent, leaf=leaf) for template in LAYOUT[stage])
    return root.join(folder) if folder else root.path, stem


def output_path(root: DataRoot, stage: str, key: str, name: str) -> str:
    """Path of file ``name`` of an output: ``.npy`` is a suffix of the stem, ``model.keras`` a file in its folder."""
    folder, stem = output_location(root, stage, key)
    return posixpath.join(folder, stem + name if name.startswith(".") else name)


# Outputs genreflow 0.1 wrote under other names. Their manifests lack the code version that every
# fingerprint now holds, so nothing in them counts as done: a rebuild removes them (remove_legacy_outputs).
LEGACY_OUTPUTS: tuple[str, ...] = ("audio", "mel-aug", "ingest-skipped.parquet")


def remove_legacy_outputs(root: DataRoot) -> list[str]:
    """Delete the outputs of genreflow 0.1 that this version rewrites under its own names; the names removed."""
    removed = []
    for name in LEGACY_OUTPUTS:
        path = root.join(name)
        if root.exists(path):
            root.remove(path, recursive=True)
            removed.append(name)
    return removed


def tracks_path(root: DataRoot) -> str:
    """tracks.parquet: one row a track, the table every stage after ingest works on."""
    return output_path(root, "ingest", "", TRACKS_TABLE)


def manifest_path(root: DataRoot, stage: str, key: str = "") -> str:
    folder, stem = output_location(root, stage, key)
    return posixpath.join(folder, f"{stem}.manifest.json" if stem else "manifest.json")


@dataclass
class Output:
    """An output being checked or written; see the module docstring for the protocol."""

    root: DataRoot
    spec: OutputSpec
    done: bool = False
    rows: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    _cleared: bool = False

    # ---- paths and reads ----------------------------------------------------------------------
    def path(self, name: str) -> str:
        return output_path(self.root, self.spec.stage, self.spec.key, name)

    @property
    def folder(self) -> str:
        return output_location(self.root, self.spec.stage, self.spec.key)[0]

    @property
    def manifest_path(self) -> str:
        return manifest_path(self.root, self.spec.stage, self.spec.key)

    def manifest(self) -> Manifest | None:
        return read_manifest(self.root, self.manifest_path)

    def read_json(self, name: str) -> Any:
        return self.root.read_json(self.path(name))

    def read_parquet(self, name: str) -> pd.DataFrame:
        return self.root.read_parquet(self.path(name))

    def read_npy(self, name: str, mmap: bool = True) -> np.ndarray:
        return self.root.read_npy(self.path(name), mmap=mmap)

    # ---- writes -------------------------------------------------------------------------------
    def clear(self) -> None:
        """Unseal before the first write: drop the old manifest and half-written files of a killed write."""
        if self._cleared:
            return
        self.root.remove(self.manifest_path)
        folder, stem = output_location(self.root, self.spec.stage, self.spec.key)
        pattern = posixpath.join(folder, f"{stem}.*tmp-*" if stem else "*.tmp-*")
        for leftover in self.root.fs.glob(pattern):
            self.root.remove(leftover)
        self._cleared = True

    def _written(self, name: str) -> str:
        if self.done:
            raise StorageError(f"{self.spec.name} is already done; it is not written again")
        self.clear()
        path = self.path(name)
        for leftover in self.root.fs.glob(f"{path}.tmp-*"):  # of a write of this file that was killed
            self.root.remove(leftover)
        if path not in self.files:
            self.files.append(path)
        return path

    def write_bytes(self, name: str, data: bytes) -> None:
        self.root.write_bytes(self._written(name), data)

    def write_json(self, name: str, payload: Any) -> None:
        self.root.write_json(self._written(name), payload)

    def write_parquet(self, name: str, frame: pd.DataFrame) -> None:
        self.root.write_parquet(self._written(name), frame)

    def write_npy(self, name: str, array: np.ndarray) -> None:
        self.root.write_npy(self._written(name), array)

    def add(self, name: str) -> str:
        """Record a file that a library writes itself (Keras' model file); its path, to hand to it."""
        return self._written(name)

    def seal(self) -> Manifest:
        return write_manifest(self.root, self.manifest_path, name=self.spec.name, fingerprint=self.spec.fingerprint,
                              files=self.files, rows=self.rows, extra=self.extra, code=self.spec.code,
                              libraries=self.spec.library_versions)


@contextmanager
def open_output(root: DataRoot, spec: OutputSpec, force: bool = False) -> Iterator[Output]:
    """The output of ``spec``: done (skip it) or to be written, then sealed when the block succeeds.

    ``force`` (``--from-stage``) writes it again even when it is done.
    """
    out = Output(root, spec)
    manifest = None if force else done_manifest(root, spec)
    out.done = manifest is not None
    if manifest is not None:
        out.rows, out.extra = manifest.rows, dict(manifest.extra)
        yield out
        return
    out.clear()
    yield out
    out.seal()


def sealed_manifest(root: DataRoot, stage: str, key: str = "", fingerprint: str | None = None,
                    libraries: Mapping[str, str] | None = None) -> Manifest | None:
    """The manifest of an output whose files are intact as sealed, else None; with ``fingerprint`` (and
    ``libraries``), only if it also records that one (and no other version of those libraries): the output
    is done, as state_of says, in one read of the manifest.

    The fingerprint is compared before any file is checked, so a stale output costs no hashing.
    """
    manifest_file = manifest_path(root, stage, key)
    manifest = read_manifest(root, manifest_file)
    if manifest is None or (fingerprint is not None and manifest.fingerprint != fingerprint):
        return None
    if library_changes(manifest.libraries, libraries or {}):
        return None
    return manifest if files_intact(root, manifest_file, manifest) else None


def read_sealed_parquet(root: DataRoot, stage: str, key: str, name: str) -> pd.DataFrame | None:
    """A table of an earlier output, whatever it was made from, or None unless its files are intact as sealed.

    For what a stage carries over from its last run (ingest's splits and shards): a file a killed or
    damaged write left behind is never read as if it were complete.
    """
    if sealed_manifest(root, stage, key) is None:
        return None
    return root.read_parquet(output_path(root, stage, key, name))


def done_manifest(root: DataRoot, spec: OutputSpec) -> Manifest | None:
    """The manifest of ``spec``'s output when that output is done (state_of), else None.

    The rebuild's check (open_output, and the flow's for a finished shard): a
    done manifest that records no version of some of ``spec``'s libraries (an
    earlier genreflow's) is adopted as made with the installed ones, which are
    written into it here, so that a later upgrade of one of them makes it stale.
    Only the manifest is rewritten (atomically); its files are untouched.
    """
    manifest = sealed_manifest(root, spec.stage, spec.key, spec.fingerprint, spec.library_versions)
    if manifest is None:
        return None
    unrecorded = {name: version for name, version in spec.libraries if name not in manifest.libraries}
    if not unrecorded:
        return manifest
    adopted = manifest.model_copy(update={"libraries": {**manifest.libraries, **unrecorded}})
    root.write_bytes(manifest_path(root, spec.stage, spec.key), adopted.model_dump_json(indent=2).encode())
    return adopted


def state_of(root: DataRoot, spec: OutputSpec, verify: bool = True) -> str:
    """done, stale, missing or corrupt (storage.manifest.output_state) of the output ``spec`` plans.

    Reads only: an adopted manifest (see done_manifest) is done here without being written.
    """
    return output_state(root, manifest_path(root, spec.stage, spec.key), spec.fingerprint, verify,
                        spec.library_versions)


def staleness(root: DataRoot, spec: OutputSpec) -> Staleness | None:
    """Why an output is stale: its own code changed, what it was made from, or a library that made it
    ("dependencies", :func:`dependency_changes`); None when not stale."""
    manifest = read_manifest(root, manifest_path(root, spec.stage, spec.key))
    if manifest is None:
        return None
    if manifest.fingerprint != spec.fingerprint:
        return "code" if manifest.code != spec.code else "inputs"
    return "dependencies" if library_changes(manifest.libraries, spec.library_versions) else None


def dependency_changes(root: DataRoot, spec: OutputSpec) -> dict[str, tuple[str, str]]:
    """{library: (version the output was made with, version installed)} of each of ``spec``'s libraries whose
    version changed since its output was sealed; empty when it has no manifest."""
    manifest = read_manifest(root, manifest_path(root, spec.stage, spec.key))
    return {} if manifest is None else library_changes(manifest.libraries, spec.library_versions)
