"""Random histories of a changing collection end where a cold build ends (issue 25, part 2).

A history is a list of operations on a small folder collection and its data
root, as months of scheduled rebuilds would apply them: tracks added, removed,
re-encoded or retagged (moved to another genre folder), a stage parameter
changed, a stage's code "upgraded" (its code version changed, as
tests/flows/test_changing_collection.py does), a model promoted by hand, a
rebuild run, or a rebuild SIGKILLed at a random moment (its whole process group,
Dask workers included, as tests/reliability/test_kill_anywhere.py does) and run
again. After the last operation the scheduled rebuild runs once more, and
:func:`compare` holds the data root against a cold build of the final
collection with the final configuration and code.

What "equal" means, and why it is not "every file of a fresh data root":

- **Splits** equal a fresh ingest's, track by track (a track's split is a hash
  of its own key; tasks/split.py).
- **Shards** are append-only by design (tasks/split.py): which tracks share a
  shard depends on the order they arrived, so a fresh ingest may cut other
  shards. The cold build therefore starts from the history's sealed track
  table (its splits and shards, checked above) in an empty data root and
  computes every output afresh. Every shard's bytes, stats.json, the model's
  weights and history, the evaluation and predictions must then be identical:
  training is deterministic for a given shard plan (model/train.py switches op
  determinism on; the clip order is a function of the seed and the epoch), as
  test_kill_anywhere asserts across kills. When the history's plan is the fresh
  one, this cold build is a fully fresh one. Files of shards the plan no
  longer has (emptied, or merged away by compaction) stay on disk, unread:
  they are listed and counted, not compared (they cost disk, not correctness).
- **Status** of the history's root under the final configuration is all done.
- **The promoted model** is the final run, or the final run's report explains
  the gate's decision that kept it out and names the promoted run the registry
  holds. A run can be promoted differently from the cold build's (which has
  no earlier model to beat), so only that is compared.

``python -m genreflow.bench.histories --runs N`` draws N histories with
Hypothesis (``pip install -e ".[dev]"``) and prints each one, the kills that
landed, and every mismatch; tests/reliability/test_histories.py runs a few.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENRES: tuple[str, ...] = ("Rock", "Pop", "Folk")
BASE_PER_GENRE = 3  # the collection a history starts from: 9 tracks
POOL_PER_GENRE = 3  # other audio, for added, re-encoded and retagged tracks
SECONDS = 2.25  # one 2 s clip a track
MIN_TRACKS = 6  # removals stop here, so that every split can keep a track or two

# Everything small: one 2 s clip of 32 bands, one augmented copy, shards of 3, one epoch of CNN.
BASE_OPTIONS: dict[str, Any] = {
    "source": "folder", "shard_size": 3, "workers": 2, "retries": 0, "clip_seconds": 2.0, "clips_per_track": 1,
    "n_mels": 32, "time_stretch": [0.9], "pitch_shift": [], "epochs": 1, "batch_size": 4, "patience": 5,
    "crop_seconds": 0, "family": "cnn", "baseline": False, "val_fraction": 0.25, "test_fraction": 0.25,
}
# The stage parameters a history changes, each with its values (the first is the starting one), and what they
# make stale: n_mels mel, augment and all after; time_stretch augment and after; learning_rate the model alone.
PARAMETERS: dict[str, tuple[Any, ...]] = {
    "n_mels": (32, 24),
    "time_stretch": ([0.9], [0.8]),
    "learning_rate": (1e-3, 5e-4),
}
# Upgrading a stage lists one more function as its code (tests/flows/test_changing_collection.py's way): the
# version changes as a real code change would. The fourth upgrade of a stage returns it to its own code.
UPGRADABLE: tuple[str, ...] = ("decode", "mel", "augment", "stats", "train")
EXTRA_CODE: tuple[str, ...] = ("genreflow.tasks.split:group_position", "genreflow.tasks.split:split_of_position",
                               "genreflow.tasks.split:group_keys")
# Where a kill may land: after a delay from the start, or once the first new manifest of a stage (or the
# model's) appears, then a drawn delay.
KILL_MARKERS: tuple[str, ...] = ("start", "decode", "mel", "augment", "stats", "model")
KILL_DEADLINE_S = 600.0


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Op:
    """One operation; ``a`` and ``b`` pick what it acts on (taken modulo what there is, so any draw is valid)."""

    kind: str
    a: int = 0
    b: int = 0

    def __str__(self) -> str:
        return f"{self.kind}({self.a}, {self.b})"


# Weights: collection changes are cheap (a file copy), a preprocessing rebuild costs seconds, training and a
# killed rebuild (a process start, its cluster, then the rerun) the most.
WEIGHTS: dict[str, int] = {"add": 4, "remove": 3, "modify": 3, "retag": 3, "param": 3, "upgrade": 3,
                           "rebuild": 3, "train": 1, "promote": 1, "kill": 1}


def op_strategy() -> Any:
    """A Hypothesis strategy of one :class:`Op`, drawn by WEIGHTS (Hypothesis imported here: a dev dependency)."""
    from hypothesis import strategies as st

    kinds = [kind for kind, weight in WEIGHTS.items() for _ in range(weight)]
    return st.builds(Op, st.sampled_from(kinds), st.integers(0, 63), st.integers(0, 63))


def history_strategy(min_size: int = 5, max_size: int = 15) -> Any:
    from hypothesis import strategies as st

    return st.lists(op_strategy(), min_size=min_size, max_size=max_size)


# --------------------------------------------------------------------------- code versions


@contextlib.contextmanager
def code_versions(upgrades: dict[str, int]) -> Iterator[None]:
    """Stages' code as ``upgrades`` ({stage: times upgraded}) makes it, restored on exit."""
    from genreflow.tasks import stages

    saved = dict(stages.STAGE_CODE)
    for stage, times in upgrades.items():
        stages.STAGE_CODE[stage] = (*saved[stage], *EXTRA_CODE[:times % (len(EXTRA_CODE) + 1)])
    stages.stage_code.cache_clear()
    try:
        yield
    finally:
        stages.STAGE_CODE.clear()
        stages.STAGE_CODE.update(saved)
        stages.stage_code.cache_clear()


# --------------------------------------------------------------------------- one history


@dataclass
class Material:
    """The audio a history draws on, written once: the starting collection and a pool of other tracks."""

    base: Path
    pool: list[Path]

    @classmethod
    def make(cls, folder: Path) -> Material:
        from genreflow.tasks.sources.demo_synth import generate_demo_set

        generate_demo_set(folder / "base", tracks_per_genre=BASE_PER_GENRE, seed=7, seconds=SECONDS, genres=GENRES)
        pool = generate_demo_set(folder / "pool", tracks_per_genre=POOL_PER_GENRE, seed=11, seconds=SECONDS,
                                 genres=GENRES)
        return cls(folder / "base", sorted(pool))


@dataclass
class Result:
    """What a rebuild ended with: its outcome, or the one-line user error it stopped with."""

    outcome: dict[str, Any] | None
    error: str | None = None


@dataclass
class History:
    """A collection, its data root, the configuration and code as the operations so far left them."""

    material: Material
    workdir: Path
    log: Callable[[str], None] = print
    dask_address: str | None = None  # a warm cluster for the rebuilds in this process (not the killed ones)
    params: dict[str, Any] = field(default_factory=lambda: {k: v[0] for k, v in PARAMETERS.items()})
    upgrades: dict[str, int] = field(default_factory=dict)
    trained: bool = False  # whether any operation trained: then the final rebuild trains too
    kills: int = 0  # kills that landed (the rebuild was still running)
    kills_missed: int = 0  # the rebuild finished before its kill point
    added: int = 0
    fresh_plan: bool = False  # whether the final shard plan is the one a fresh ingest cuts (set by compare)
    leftovers: list[str] = field(default_factory=list)  # files of shards no longer planned (set by compare)

    def __post_init__(self) -> None:
        self.collection = self.workdir / "collection"
        self.root = self.workdir / "root"
        shutil.copytree(self.material.base, self.collection)

    # ---- the collection

    def tracks(self) -> list[Path]:
        return sorted(self.collection.glob("*/*.mp3"))

    def config(self, train: bool, root: Path | None = None, own_cluster: bool = False) -> Any:
        from genreflow.flows.config import build_config

        values = {**BASE_OPTIONS, **self.params, "input": str(self.collection), "data_root": str(root or self.root)}
        if self.dask_address and not own_cluster:
            values["dask_address"] = self.dask_address
        if not train:
            values["to_stage"] = "stats"
        return build_config(None, **values)

    def apply(self, op: Op) -> str:
        """Carry out ``op``; a line saying what it did."""
        tracks = self.tracks()
        if op.kind == "add":
            source = self.material.pool[op.a % len(self.material.pool)]
            genre = GENRES[op.b % len(GENRES)]
            self.added += 1
            target = self.collection / genre / f"added-{self.added:03d}.mp3"
            shutil.copyfile(source, target)
            return f"add {target.relative_to(self.collection)} ({source.name})"
        if op.kind == "remove" and len(tracks) <= MIN_TRACKS:
            return "remove: skipped, the collection is at its smallest"
        victim = tracks[op.a % len(tracks)]
        name = str(victim.relative_to(self.collection))
        if op.kind == "remove":
            victim.unlink()
            return f"remove {name}"
        if op.kind == "modify":
            source = self.material.pool[op.b % len(self.material.pool)]
            shutil.copyfile(source, victim)
            return f"modify {name} (now {source.name})"
        if op.kind == "retag":
            others = [g for g in GENRES if g != victim.parent.name]
            target = self.collection / others[op.b % len(others)] / victim.name
            if target.exists():
                return f"retag {name}: skipped, {target.relative_to(self.collection)} exists"
            victim.rename(target)
            return f"retag {name} -> {target.parent.name}"
        if op.kind == "param":
            name = sorted(PARAMETERS)[op.a % len(PARAMETERS)]
            values = PARAMETERS[name]
            self.params[name] = values[(values.index(self.params[name]) + 1) % len(values)]
            return f"param {name} = {self.params[name]}"
        if op.kind == "upgrade":
            stage = UPGRADABLE[op.a % len(UPGRADABLE)]
            self.upgrades[stage] = self.upgrades.get(stage, 0) + 1
            return f"upgrade {stage} (version {self.upgrades[stage] % (len(EXTRA_CODE) + 1)})"
        if op.kind in ("rebuild", "train"):
            result = self.rebuild(train=op.kind == "train")
            return f"{op.kind}: {describe(result)}"
        if op.kind == "promote":
            return self.promote(op.a)
        if op.kind == "kill":
            return self.kill(op)
        raise ValueError(f"unknown operation {op.kind!r}")

    # ---- rebuilds

    def rebuild(self, train: bool, root: Path | None = None) -> Result:
        """A rebuild in this process, with the history's code."""
        from genreflow.flows.rebuild import run_command
        from genreflow.storage.errors import GenreflowError

        self.trained |= train
        with code_versions(self.upgrades):
            try:
                return Result(run_command("rebuild", self.config(train, root)))
            except GenreflowError as exc:
                return Result(None, f"{type(exc).__name__}: {exc}")

    def promote(self, pick: int) -> str:
        """``genreflow promote RUN`` on one of the finished models (there may be none yet)."""
        from genreflow.flows.cli import main as cli
        from genreflow.storage.root import DataRoot
        from genreflow.tasks.promote import is_finished_model

        root = DataRoot(str(self.root))
        runs = sorted(p.name for p in self.root.glob("models/*") if p.is_dir() and is_finished_model(root, p.name))
        if not runs:
            return "promote: skipped, no finished model"
        run = runs[pick % len(runs)]
        with contextlib.redirect_stdout(None):
            code = cli(["promote", run, "--data-root", str(self.root)])
        return f"promote {run} by hand (exit {code})"

    def kill(self, op: Op) -> str:
        """A rebuild in a process of its own, SIGKILLed with its workers at a drawn moment; then run again here."""
        train = op.a % 4 == 0  # one kill in four lands in a training rebuild
        markers = KILL_MARKERS if train else KILL_MARKERS[:-1]
        marker = markers[op.a // 4 % len(markers)]
        delay = (1.0 + 12.0 * op.b / 63) if marker == "start" else 0.6 * op.b / 63
        spec = self.workdir / "child.json"
        config = self.config(train, own_cluster=True).model_dump(mode="json")
        spec.write_text(json.dumps({"config": config, "upgrades": self.upgrades}))
        self.trained |= train
        landed, seconds = kill_rebuild(spec, self.root, marker, delay, self.workdir / "killed.log")
        if landed:
            self.kills += 1
        else:
            self.kills_missed += 1
        result = self.rebuild(train)
        what = f"killed after {seconds:.1f} s" if landed else f"finished before the kill ({seconds:.1f} s)"
        return f"kill a {'training' if train else 'preprocessing'} rebuild at {marker} + {delay:.2f} s: {what}; " \
               f"rerun: {describe(result)}"

    # ---- the end

    def finish(self, cache: dict[str, tuple[Path, Result]] | None = None) -> list[str]:
        """The scheduled rebuild after the last operation, then :func:`compare` against a cold build."""
        final = self.rebuild(self.trained)
        self.log(f"final rebuild: {describe(final)}")
        cold_root, cold = cold_build(self, cache)
        return compare(self, final, cold_root, cold)


def describe(result: Result) -> str:
    if result.error:
        return f"stopped: {result.error}"
    outcome = result.outcome or {}
    promotion = outcome.get("promotion") or {}
    text = f"{outcome.get('tracks')} tracks"
    if promotion:
        text += f", {promotion.get('run')} {promotion.get('decision')}"
    return text


# --------------------------------------------------------------------------- the kill


def _new_manifests(root: Path, pattern: str, since_ns: int) -> int:
    found = 0
    for path in root.glob(pattern):
        with contextlib.suppress(OSError):
            found += path.stat().st_mtime_ns >= since_ns
    return found


MARKER_GLOBS: dict[str, str] = {"decode": "decode/*.manifest.json", "mel": "mel/*.manifest.json",
                                "augment": "augment/*.manifest.json", "stats": "stats.manifest.json",
                                "model": "models/run-*/manifest.json"}


def kill_rebuild(spec: Path, root: Path, marker: str, delay: float, log: Path) -> tuple[bool, float]:
    """Run ``--child SPEC`` and SIGKILL its process group ``delay`` seconds after ``marker``; (landed, seconds)."""
    from prefect.settings import get_current_settings

    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "TF_CPP_MIN_LOG_LEVEL": "3"}
    if url := get_current_settings().api.url:  # the harness's or the soak's API: no temporary one to start
        env["PREFECT_API_URL"] = url
    start, since = time.monotonic(), time.time_ns()
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "genreflow.bench.histories", "--child", str(spec)],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    fire_at = start + delay if marker == "start" else None
    try:
        while process.poll() is None:
            now = time.monotonic()
            if now - start > KILL_DEADLINE_S:
                raise RuntimeError(f"a killed rebuild ran {KILL_DEADLINE_S} s: {log}")
            if fire_at is None and _new_manifests(root, MARKER_GLOBS[marker], since):
                fire_at = now + delay
            if fire_at is not None and now >= fire_at:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return True, now - start
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"the rebuild to kill failed on its own (exit {process.returncode}): {log.read_text()}")
    return False, time.monotonic() - start


def child(spec_path: Path) -> int:
    """The process a kill ends: a rebuild with the configuration and code versions of ``spec_path``."""
    from genreflow.flows.config import Config
    from genreflow.flows.rebuild import run_command
    from genreflow.storage.errors import GenreflowError

    spec = json.loads(spec_path.read_text())
    config = Config.model_validate(spec["config"])
    with code_versions(spec["upgrades"]):
        try:
            run_command("rebuild", config)
        except GenreflowError as exc:
            print(f"genreflow: error: {exc}", file=sys.stderr)
            return 1
    return 0


# --------------------------------------------------------------------------- the cold build and the comparison


def _digest(path: Path) -> str:
    return hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()


def cold_build(history: History, cache: dict[str, tuple[Path, Result]] | None = None) -> tuple[Path, Result]:
    """A data root built from nothing but the final collection, configuration and code, on the history's shard
    plan (module docstring); cached per final state in ``cache``."""
    tables = ("tracks.parquet", "tracks.skipped.parquet", "tracks.manifest.json")
    key = hashlib.blake2b(json.dumps({
        "collection": {str(p.relative_to(history.collection)): _digest(p) for p in history.tracks()},
        "params": history.params, "upgrades": {k: v % (len(EXTRA_CODE) + 1) for k, v in history.upgrades.items()},
        "trained": history.trained,
        "plan": [_digest(history.root / name) if (history.root / name).exists() else None for name in tables],
    }, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()
    if cache is not None and key in cache:
        history.log("cold build: cached")
        return cache[key]
    root = Path(tempfile.mkdtemp(prefix="cold-", dir=history.workdir.parent))
    if (history.root / "tracks.manifest.json").exists():
        for name in tables:
            shutil.copyfile(history.root / name, root / name)
    result = history.rebuild(history.trained, root)
    history.log(f"cold build: {describe(result)}")
    if cache is not None:
        cache[key] = (root, result)
    return root, result


def _files(root: Path, patterns: tuple[str, ...]) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for pattern in patterns for p in sorted(root.glob(pattern))}


SHARD_FILES: tuple[str, ...] = ("tracks.parquet", "tracks.skipped.parquet", "quarantine.parquet", "decode/*",
                                "mel/*", "augment/*", "stats.json")
MANIFEST_KEYS: tuple[str, ...] = ("name", "fingerprint", "code", "rows", "libraries")  # not when, nor mtimes


def _comparable(name: str, data: bytes) -> bytes:
    """A manifest without the times it was written; any other file as it is."""
    if not name.endswith("manifest.json"):
        return data
    manifest = json.loads(data)
    files = {f: {k: v for k, v in entry.items() if k != "mtime_ns"} for f, entry in manifest["files"].items()}
    return json.dumps({**{k: manifest[k] for k in MANIFEST_KEYS}, "files": files}, sort_keys=True).encode()


def _shard_of(name: str) -> str:
    """The shard of a shard stage's file: mel/train-0001.manifest.json -> train-0001."""
    return name.split("/", 1)[1].split(".", 1)[0]


def compare(history: History, final: Result, cold_root: Path, cold: Result) -> list[str]:
    """How the history's data root differs from the cold build's (module docstring); empty when it does not."""
    import pandas as pd

    from genreflow.flows.status import collect_status
    from genreflow.storage.registry import read_registry
    from genreflow.storage.root import DataRoot
    from genreflow.tasks.ingest import ingest_stage

    mismatches: list[str] = []
    if final.error != cold.error:
        return [f"the final rebuild stopped with {final.error!r}, the cold build with {cold.error!r}"]

    # Every track's split, against a fresh ingest of the final collection.
    fresh = Path(tempfile.mkdtemp(prefix="fresh-", dir=history.workdir.parent))
    config = history.config(history.trained, fresh)
    with code_versions(history.upgrades):
        fresh_tracks = ingest_stage(str(fresh), config.source, config.split, config.run.shard_size, 1,
                                    log=lambda *_: None).tracks
    tracks = pd.read_parquet(history.root / "tracks.parquet")
    columns = ["track_id", "path", "genre", "split"]
    ours = tracks[columns].sort_values("track_id").reset_index(drop=True)
    theirs = fresh_tracks[columns].sort_values("track_id").reset_index(drop=True)
    if not ours.equals(theirs):
        only = set(ours["track_id"]) ^ set(theirs["track_id"])
        mismatches.append("tracks or splits differ from a fresh ingest: "
                          + (f"tracks in one only: {sorted(only)}" if only else str(ours.compare(theirs))))
    history.fresh_plan = bool(tracks.sort_values("track_id")["shard"].tolist()
                              == fresh_tracks.sort_values("track_id")["shard"].tolist())
    if final.error:
        return mismatches

    # Every shard's bytes (and its manifest's fingerprint, code and checksums), the track table and stats. The
    # files of a shard the plan no longer has (its last track gone, or merged into another by compaction) stay
    # on disk: nothing reads them, and a shard of that name made later has other members, so another
    # fingerprint, and is computed afresh. They cost disk, not correctness: counted, not compared.
    planned = set(tracks["shard"])
    ours_files = {n: _comparable(n, d) for n, d in _files(history.root, SHARD_FILES).items()}
    history.leftovers = sorted(n for n in ours_files if "/" in n and _shard_of(n) not in planned)
    ours_files = {n: d for n, d in ours_files.items() if n not in history.leftovers}
    cold_files = {n: _comparable(n, d) for n, d in _files(cold_root, SHARD_FILES).items()}
    if sorted(ours_files) != sorted(cold_files):
        mismatches.append(f"files only in the history's root: {sorted(set(ours_files) - set(cold_files))}; only in "
                          f"the cold build's: {sorted(set(cold_files) - set(ours_files))}")
    mismatches += [f"{name} differs from the cold build's" for name in sorted(set(ours_files) & set(cold_files))
                   if ours_files[name] != cold_files[name]]

    # Status: everything the final configuration plans is done.
    with code_versions(history.upgrades):
        status = collect_status(history.config(history.trained))
    states = {stage: set(counts) for stage, counts in status["stages"].items()}
    if any(found != {"done"} for found in states.values()) or status["stats"] != "done" or (
            history.trained and status["train"] != "done"):
        mismatches.append(f"status is not all done: {states}, stats {status['stats']}, train {status['train']}")

    if history.trained:
        mismatches += compare_models(history, final, cold_root, cold)
    elif read_registry(DataRoot(str(history.root))).promoted is not None:
        mismatches.append("a model is promoted though nothing was trained")
    return mismatches


def compare_models(history: History, final: Result, cold_root: Path, cold: Result) -> list[str]:
    """The final run's model, evaluation and predictions against the cold build's; the promoted model."""
    import numpy as np

    from genreflow.storage.registry import read_registry
    from genreflow.storage.root import DataRoot

    run = (final.outcome or {}).get("promotion", {}).get("run")
    cold_run = (cold.outcome or {}).get("promotion", {}).get("run")
    if run is None or run != cold_run:
        return [f"the final run is {run}, the cold build's {cold_run}"]
    mismatches = []
    ours, theirs = history.root / "models" / run, cold_root / "models" / run
    for name in ("history.csv", "labels.json", "audio.json"):
        if (ours / name).read_bytes() != (theirs / name).read_bytes():
            mismatches.append(f"models/{run}/{name} differs from the cold build's")
    import keras

    expected = keras.saving.load_model(theirs / "model.keras", safe_mode=True).get_weights()
    got = keras.saving.load_model(ours / "model.keras", safe_mode=True).get_weights()
    if len(got) != len(expected) or not all(np.array_equal(a, b) for a, b in zip(expected, got, strict=False)):
        mismatches.append(f"models/{run}/model.keras: weights differ from the cold build's")
    for name in ("evaluation.json", "predictions.parquet"):
        if (history.root / "reports" / run / name).read_bytes() != (cold_root / "reports" / run / name).read_bytes():
            mismatches.append(f"reports/{run}/{name} differs from the cold build's")

    # The promoted model: the final run, or the report explains the decision that kept it out.
    promoted = read_registry(DataRoot(str(history.root))).promoted
    report = (history.root / "reports" / run / "report.md").read_text()
    promotion = json.loads((history.root / "reports" / run / "promotion.json").read_text())
    if promoted != run:
        explained = (promotion.get("decision") == "rejected" and promotion.get("promoted") == promoted
                     and f"**{promotion['decision']}**" in report and f"use: {promoted}" in report)
        if not explained:
            mismatches.append(f"{promoted} is promoted, not the final run {run}, and its report does not say why "
                              f"(its decision: {promotion.get('decision')}, naming {promotion.get('promoted')})")
    elif f"use: {run}" not in report:
        mismatches.append(f"the final run {run} is promoted but its report names another model")
    return mismatches


# --------------------------------------------------------------------------- a run of histories


@dataclass
class Tally:
    histories: int = 0
    operations: int = 0
    kills: int = 0
    kills_missed: int = 0
    fresh_plans: int = 0
    with_leftovers: int = 0  # histories that left files of shards no longer planned
    mismatches: list[str] = field(default_factory=list)


def run_history(ops: list[Op], material: Material, workdir: Path, tally: Tally | None = None,
                cache: dict[str, tuple[Path, Result]] | None = None, log: Callable[[str], None] = print,
                dask_address: str | None = None) -> list[str]:
    """Apply ``ops`` to a fresh copy of the starting collection, finish, compare; the mismatches."""
    history = History(material, Path(tempfile.mkdtemp(prefix="history-", dir=workdir)), log, dask_address)
    log(f"history of {len(ops)} operations: {', '.join(map(str, ops))}")
    for i, op in enumerate(ops, 1):
        log(f"  {i:2d}. {history.apply(op)}")
    mismatches = history.finish(cache)
    if tally is not None:
        tally.histories += 1
        tally.operations += len(ops)
        tally.kills += history.kills
        tally.kills_missed += history.kills_missed
        tally.fresh_plans += history.fresh_plan
        tally.with_leftovers += bool(history.leftovers)
        tally.mismatches += mismatches
    if history.leftovers:
        log(f"  files of shards no longer planned, left on disk: {', '.join(history.leftovers)}")
    for line in mismatches:
        log(f"  MISMATCH: {line}")
    return mismatches


def soak(runs: int, workdir: Path, seed: int, shrink: bool = False, log: Callable[[str], None] = print) -> Tally:
    """``runs`` histories drawn by Hypothesis from ``seed``, on one warm 2-worker cluster.

    Every history is run to its end and counted; with ``shrink`` the first mismatch stops the soak, and
    Hypothesis shrinks it to a minimal failing history (each try is a whole history: minutes each).
    """
    from distributed import LocalCluster
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    from genreflow.flows.runner import cluster_settings, prefect_api

    material = Material.make(workdir / "material")
    tally = Tally()
    cache: dict[str, tuple[Path, Result]] = {}
    phases = list(Phase) if shrink else [Phase.explicit, Phase.generate]

    with prefect_api(), cluster_settings(), LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                                         dashboard_address=":0") as cluster:
        @hypothesis_seed(seed)
        @settings(max_examples=runs, deadline=None, database=None, phases=phases,
                  suppress_health_check=list(HealthCheck))
        @given(history_strategy())
        def one(ops: list[Op]) -> None:
            start = time.monotonic()
            mismatches = run_history(ops, material, workdir, tally, cache, log, cluster.scheduler_address)
            log(f"  ({time.monotonic() - start:.0f} s; so far {tally.histories} histories, {tally.kills} kills, "
                f"{len(tally.mismatches)} mismatches)")
            assert not (shrink and mismatches), mismatches

        one()
    return tally


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m genreflow.bench.histories", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="histories to draw (default 10)")
    parser.add_argument("--seed", type=int, default=25, help="Hypothesis seed")
    parser.add_argument("--workdir", type=Path, help="keep the collections and data roots here (default: temp)")
    parser.add_argument("--shrink", action="store_true", help="stop at the first mismatch and shrink it")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # the process a kill ends
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(name, "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="genreflow-histories-"))
    workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_HOME", str(workdir / "prefect-home"))
    start = time.monotonic()
    failure = None
    try:
        tally = soak(args.runs, workdir, args.seed, args.shrink, lambda line: print(line, flush=True))
    except AssertionError as exc:  # Hypothesis re-raised the smallest failing history (printed above)
        failure = exc
        tally = None
    seconds = time.monotonic() - start
    if tally is not None:
        print(f"histories {tally.histories}, operations {tally.operations}, kills survived {tally.kills} "
              f"(missed {tally.kills_missed}), fresh shard plans {tally.fresh_plans}, histories leaving files of "
              f"unplanned shards {tally.with_leftovers}, mismatches "
              f"{len(tally.mismatches)}, {seconds:.0f} s")
        return 0 if not tally.mismatches else 1
    print(f"a history ended away from its cold build: {failure}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
