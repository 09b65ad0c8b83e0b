"""Issue 25.1: a full disk, on a real full filesystem (a small tmpfs), at each moment genreflow writes.

The ENOSPC always comes from the kernel: a tmpfs of a few MiB is the data root
or the prediction work folder, and a ballast file fills it at the moment under
test. In-process runs use a Dask cluster of threads in this process, so that a
hook can write the ballast just before the target write (another process
filling the disk, at a reproducible moment); the decode point runs as a real
``genreflow preprocess`` on a tmpfs too small for its first shard. At each
point: one line naming the path and saying the disk is full, no traceback, no
manifest claiming a partial output, no temporary file left, the registry
unchanged; after the space is freed the rerun completes and equals a cold build.
The precheck (storage/space.py) refuses a stage that clearly will not fit.

Mounting needs root (as in CI); elsewhere every test here skips, saying why, except under CI=true, where it
fails, as the cluster tests do.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import numpy as np
import pandas as pd
import pytest

from genreflow.flows.cli import main
from genreflow.flows.status import collect_status
from genreflow.storage.errors import DiskFull, NotEnoughSpace, disk_full_error
from genreflow.storage.registry import PromotionRecord, read_registry, record_decision
from genreflow.storage.root import DataRoot
from tests.reliability.conftest import PREPROCESS_OPTIONS, cli_flags, run_cli, small_config

pytestmark = pytest.mark.timeout(600)

PAGE = 4096
REPO = Path(__file__).resolve().parents[2]


IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def cannot(reason: str) -> NoReturn:
    """Skip, saying why; under CI=true fail instead, so that the disk-full points are never skipped unseen."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: the disk-full tests must run)")
    pytest.skip(reason)


class Disk:
    """A tmpfs mounted at ``mount`` for one test, with a ballast file to fill it and free it again."""

    def __init__(self, mount: Path) -> None:
        self.mount = mount
        self.ballast = mount / "ballast"
        self.mounted = False

    def mount_tmpfs(self, size: int) -> Disk:
        if os.geteuid() != 0:
            cannot("mounting a tmpfs needs root (CI runs as root)")
        self.mount.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.mount)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            cannot(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
        self.mounted = True
        return self

    def resize(self, size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.mount)], check=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.mount)], check=False)
            self.mounted = False

    @property
    def free(self) -> int:
        return shutil.disk_usage(self.mount).free

    def fill(self, leave: int = 0) -> None:
        """Grow the ballast until at most ``leave`` bytes are free."""
        with open(self.ballast, "ab") as handle:
            while (room := self.free - leave) >= PAGE:
                try:
                    handle.write(b"\0" * min(room, 1 << 20))
                    handle.flush()
                except OSError:
                    break

    def empty(self) -> None:
        self.ballast.unlink(missing_ok=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    made = Disk(tmp_path / "disk")
    try:
        yield made
    finally:
        made.unmount()


@pytest.fixture(scope="module")
def threads_cluster() -> Iterator[str]:
    """A Dask cluster of one worker thread in this process: a hook set here runs inside the tasks."""
    import distributed

    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=":0") as cluster:
        yield cluster.scheduler_address


def fill_before(monkeypatch: pytest.MonkeyPatch, disk: Disk, target: Callable[[str], bool]) -> list[str]:
    """Fill ``disk`` just before the first atomic write (storage.root.DataRoot.atomic_open) of a path that
    ``target`` picks; the paths it fired on."""
    original = DataRoot.atomic_open
    fired: list[str] = []

    def hooked(self: DataRoot, path: str):  # type: ignore[no-untyped-def]
        if not fired and target(path):
            fired.append(path)
            disk.fill()
        return original(self, path)

    monkeypatch.setattr(DataRoot, "atomic_open", hooked)
    return fired


# Dask's own noise when a cluster shuts down under load (a worker's heartbeat meets a closed scheduler): not an
# error of the run, and no genreflow frame in it.
SHUTDOWN_NOISE = ("distributed.comm.core.CommClosedError", "tornado.iostream.StreamClosedError")


def raised_with_traceback(err: str) -> list[str]:
    """The exception line that ends each traceback in ``err``."""
    ends, inside = [], False
    for line in err.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            inside = True
        elif inside and line.strip() and not line.startswith(" "):
            ends.append(line)
            inside = False
    return ends


def one_error_line(err: str) -> str:
    """The last stderr line, after checking that no error came with a traceback (Dask's shutdown noise aside)."""
    assert [end for end in raised_with_traceback(err) if not end.startswith(SHUTDOWN_NOISE)] == [], err
    assert not re.search(r'File "' + re.escape(str(REPO)) + r"/(?!\.venv/)", err), err  # no genreflow frame
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no error line"
    return lines[-1]


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name or ".old-" in p.name)


def shard_bytes(root: Path) -> dict[str, bytes]:
    names = ["tracks.parquet", "quarantine.parquet", "*/*[0-9].npy", "*/*[0-9].parquet", "*/*.quarantine.parquet"]
    return {str(p.relative_to(root)): p.read_bytes() for name in names for p in sorted(root.glob(name))}


def unsealed(root: Path) -> list[str]:
    """Manifests whose files are not all as sealed: none may claim a partial output."""
    from genreflow.storage.manifest import files_intact, read_manifest

    data = DataRoot(str(root))
    bad = []
    for path in root.rglob("*manifest.json"):
        manifest = read_manifest(data, str(path))
        if manifest is None or not files_intact(data, str(path), manifest):
            bad.append(str(path.relative_to(root)))
    return bad


def assert_shard_stopped_whole(root: Path, target: str, err: str) -> None:
    """A run stopped by a full disk at ``target``'s array: one line naming it, no manifest claiming it, nothing
    unsealed or half-written left, and the earlier promoted model still promoted."""
    assert one_error_line(err) == (
        f"genreflow: error: cannot write {root}/{target}.npy: the disk is full (no space left on device); free "
        "some space there and rerun: finished outputs are kept, nothing half-written is")
    assert not (root / f"{target}.manifest.json").exists() and unsealed(root) == []
    assert leftovers(root) == []
    assert read_registry(DataRoot(str(root))).promoted == "run-earlier"


# --------------------------------------------------------------------------- the one translation, unit level


def test_a_real_enospc_becomes_one_line_naming_the_path_and_leaves_no_temporary_file(disk: Disk) -> None:
    disk.mount_tmpfs(64 * 1024)
    root = DataRoot(str(disk.mount / "root"))
    root.write_bytes(root.join("small.json"), b"{}")
    with pytest.raises(OSError) as raised:
        root.write_npy(root.join("mel", "train-0000.npy"), np.ones((64, 1024), np.float32))
    assert raised.value.errno == 28  # from the kernel: the tmpfs is full
    error = disk_full_error(raised.value)
    assert isinstance(error, DiskFull) and "\n" not in str(error)
    assert f"cannot write {root.join('mel', 'train-0000.npy')}: the disk is full" in str(error)
    assert leftovers(disk.mount) == [] and not (disk.mount / "root" / "mel" / "train-0000.npy").exists()
    # Wrapped as a Dask worker or Prefect hands it back: found through the cause chain.
    try:
        raise RuntimeError("task failed") from raised.value
    except RuntimeError as wrapped:
        assert str(disk_full_error(wrapped)) == str(error)
    assert disk_full_error(OSError(2, "No such file or directory", "x")) is None


def test_the_precheck_estimates_from_finished_shards(tmp_path: Path, preprocessed_root: Path, disk: Disk) -> None:
    from genreflow.storage.space import check_space, output_need, shard_stage_need

    root = DataRoot(str(preprocessed_root))
    tracks = pd.read_parquet(preprocessed_root / "tracks.parquet").groupby("shard").size().to_dict()
    assert shard_stage_need(root, "mel", tracks) is None  # every shard done: nothing left to write
    more = {**tracks, "train-9998": 4, "train-9999": 6}
    need = shard_stage_need(root, "mel", more)
    sizes = sum(p.stat().st_size for p in (preprocessed_root / "mel").iterdir() if "manifest" not in p.name)
    assert need is not None and need.units == 10 and need.per_unit == pytest.approx(sizes / sum(tracks.values()))
    assert shard_stage_need(DataRoot(str(tmp_path / "empty")), "mel", more) is None  # nothing finished: no estimate
    assert output_need(root, "train") is None  # no model to go by

    disk.mount_tmpfs(256 * 1024)
    small = DataRoot(str(disk.mount / "root"))
    check_space(small, [need.__class__("mel", 1, 1000.0)], "preprocessing")  # fits
    with pytest.raises(NotEnoughSpace) as raised:
        check_space(small, [need], "preprocessing")
    message = str(raised.value)
    assert message.startswith(f"{small.path}: not enough space for preprocessing: about ")
    assert f"mel {need.describe().split(' ', 1)[1]}" in message and "the disk would be full" in message


def test_a_stage_that_will_not_fit_stops_before_it_starts(tmp_path: Path, preprocessed_root: Path, demo_dir: Path,
                                                         disk: Disk, threads_cluster: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    used = sum(p.stat().st_size for p in preprocessed_root.rglob("*") if p.is_file())
    disk.mount_tmpfs(used + (4 << 20))
    root = disk.mount / "root"
    shutil.copytree(preprocessed_root, root)
    for path in [*root.glob("mel/train-*"), *root.glob("mel/val-*")]:
        path.unlink()
    disk.fill(leave=64 * 1024)
    before = {str(p.relative_to(root)) for p in root.rglob("*")}

    code = main(["preprocess", *cli_flags(root, demo_dir), "--dask-address", threads_cluster])

    line = one_error_line(capsys.readouterr().err)
    assert code == 1 and "not enough space for preprocessing" in line and str(root) in line
    assert "tracks x" in line and "KiB free" in line
    assert {str(p.relative_to(root)) for p in root.rglob("*")} - {".genreflow.lock"} <= before  # nothing started


# --------------------------------------------------------------------------- mid-shard


def test_disk_full_mid_decode_via_the_cli(tmp_path: Path, preprocessed_root: Path, demo_dir: Path, disk: Disk,
                                          threads_cluster: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A cold preprocess on a disk with room for the ingest table but not a decoded shard: a real command (to
    decode only, one worker: the CI's cost; mel and augment write through the same code, tested above)."""
    disk.mount_tmpfs(512 * 1024)
    root = disk.mount / "root"
    flags = [*cli_flags(root, demo_dir), "--to-stage", "decode"]

    result = run_cli(["preprocess", *flags, "--workers", "1"], tmp_path)

    line = one_error_line(result.stderr)
    assert result.returncode == 1, result.stderr
    assert line.startswith(f"genreflow: error: cannot write {root}/decode/") and "the disk is full" in line
    assert ".npy" in line.split(":")[2]
    assert leftovers(disk.mount) == [] and unsealed(root) == []
    shards = pd.read_parquet(root / "tracks.parquet")["shard"].nunique()
    assert len(list(root.glob("decode/*.manifest.json"))) < shards  # a shard that fitted is kept, sealed

    disk.resize(96 << 20)
    assert main(["preprocess", *flags, "--dask-address", threads_cluster]) == 0, capsys.readouterr().err
    decoded = {name: data for name, data in shard_bytes(preprocessed_root).items()
               if name.startswith("decode/") or name in ("tracks.parquet", "quarantine.parquet")}
    assert shard_bytes(root) == decoded and len(decoded) > 10
    assert leftovers(root) == [] and unsealed(root) == []


@pytest.mark.parametrize("target", ["mel/train-0001", "augment/train-0000"])
def test_disk_full_mid_shard(target: str, tmp_path: Path, preprocessed_root: Path, demo_dir: Path, disk: Disk,
                             threads_cluster: str, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    used = sum(p.stat().st_size for p in preprocessed_root.rglob("*") if p.is_file())
    disk.mount_tmpfs(used + (8 << 20))
    root = disk.mount / "root"
    shutil.copytree(preprocessed_root, root)
    record_decision(DataRoot(str(root)), PromotionRecord(run="run-earlier", decision="promoted", reason="by hand",
                                                         policy="always"))
    for path in root.glob(f"{target}.*"):
        path.unlink()
    fired = fill_before(monkeypatch, disk, lambda path: path.endswith(f"{target}.npy"))
    flags = [*cli_flags(root, demo_dir), "--dask-address", threads_cluster]

    code = main(["preprocess", *flags])

    assert fired and code == 1
    assert_shard_stopped_whole(root, target, capsys.readouterr().err)

    monkeypatch.undo()
    disk.empty()
    assert main(["preprocess", *flags]) == 0, capsys.readouterr().err
    assert shard_bytes(root) == shard_bytes(preprocessed_root)
    assert read_registry(DataRoot(str(root))).promoted == "run-earlier"
    status = collect_status(small_config(root, demo_dir, **PREPROCESS_OPTIONS))
    assert all(set(counts) == {"done"} for counts in status["stages"].values() if counts), status["stages"]


@pytest.fixture(scope="module")
def musicnn_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in musicnn cache (random checkpoints of the real network's shapes): the embed stage's plumbing."""
    from tests.model.musicnn_tiny import stand_in_weights_cache

    return stand_in_weights_cache(tmp_path_factory.mktemp("weights"))


def test_disk_full_mid_embed_shard(tmp_path: Path, preprocessed_root: Path, demo_dir: Path, disk: Disk,
                                   musicnn_weights: Path, threads_cluster: str, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The embed stage (musicnn's vectors of a decoded shard) on a disk that fills just before its second
    shard's array: the embeddings of the preprocessed root are all still to do, so only embed runs."""
    target = "embed/train-0001"
    used = sum(p.stat().st_size for p in preprocessed_root.rglob("*") if p.is_file())
    disk.mount_tmpfs(used + (8 << 20))
    root, cold = disk.mount / "root", tmp_path / "cold"
    for folder in (root, cold):
        shutil.copytree(preprocessed_root, folder)
    record_decision(DataRoot(str(root)), PromotionRecord(run="run-earlier", decision="promoted", reason="by hand",
                                                         policy="always"))
    fired = fill_before(monkeypatch, disk, lambda path: path.endswith(f"{target}.npy"))

    def preprocess(folder: Path) -> tuple[int, str]:
        code = main(["preprocess", *cli_flags(folder, demo_dir), "--weights-dir", str(musicnn_weights),
                     "--dask-address", threads_cluster])
        return code, capsys.readouterr().err

    code, err = preprocess(root)
    assert fired and code == 1, err
    assert_shard_stopped_whole(root, target, err)

    monkeypatch.undo()
    disk.empty()
    assert preprocess(root)[0] == 0
    assert preprocess(cold)[0] == 0
    embedded = shard_bytes(root)
    assert embedded == shard_bytes(cold) and f"{target}.npy" in embedded
    assert len([name for name in embedded if name.startswith("embed/")]) == 2 * len(list(root.glob("decode/*.npy")))
    assert leftovers(root) == [] and unsealed(root) == []
    assert read_registry(DataRoot(str(root))).promoted == "run-earlier"
    status = collect_status(small_config(root, demo_dir, weights_dir=str(musicnn_weights), **PREPROCESS_OPTIONS))
    assert set(status["stages"]) == {"decode", "mel", "augment", "embed"}
    assert all(set(counts) == {"done"} for counts in status["stages"].values()), status["stages"]


# --------------------------------------------------------------------------- the model and the report


def test_disk_full_while_the_model_and_then_the_report_are_written(
    tmp_path: Path, preprocessed_root: Path, demo_dir: Path, disk: Disk, threads_cluster: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """One chain on one full disk: the model's save fails, then (space freed) the report's PNG, then the rerun
    completes; a cold training of the same shards must give the same model, report and registry."""
    import keras

    import genreflow.model.train as train_module

    used = sum(p.stat().st_size for p in preprocessed_root.rglob("*") if p.is_file())
    disk.mount_tmpfs(used + (48 << 20))
    root, cold = disk.mount / "root", tmp_path / "cold"
    for folder in (root, cold):
        shutil.copytree(preprocessed_root, folder)
        record_decision(DataRoot(str(folder)), PromotionRecord(run="run-earlier", decision="promoted",
                                                               reason="by hand", policy="always"))
    # --promote never: whatever the new model scores, the earlier one stays promoted, so the registry is a
    # check at every point (a promotion would come before the report, as the DAG orders them).
    options = ["--epochs", "1", "--batch-size", "8", "--baseline", "off", "--promote", "never",
               "--dask-address", threads_cluster]

    def train(folder: Path) -> tuple[int, str]:
        code = main(["train", *cli_flags(folder, demo_dir), *options])
        return code, capsys.readouterr().err

    original = train_module.write_then_move
    saves: list[Path] = []

    def fill_then_save(staged: Path, dest: Path, write: Callable[[Path], object]) -> None:
        if Path(dest).name == "model.keras" and not saves:
            saves.append(Path(dest))
            disk.fill()
        original(staged, dest, write)

    monkeypatch.setattr(train_module, "write_then_move", fill_then_save)
    code, err = train(root)
    (model,) = saves
    line = one_error_line(err)
    assert code == 1 and line.startswith(f"genreflow: error: cannot write {model}: the disk is full"), err
    assert not (model.parent / "manifest.json").exists() and not model.exists()
    assert leftovers(root) == [] and unsealed(root) == []
    assert read_registry(DataRoot(str(root))).promoted == "run-earlier"

    monkeypatch.undo()
    disk.empty()
    report = root / "reports" / model.parent.name
    fired = fill_before(monkeypatch, disk, lambda path: path == str(report / "confusion.png"))
    code, err = train(root)
    line = one_error_line(err)
    assert fired and code == 1
    assert line.startswith(f"genreflow: error: cannot write {report}/confusion.png: the disk is full"), err
    assert (model.parent / "manifest.json").exists() and not (report / "report.manifest.json").exists()
    assert leftovers(root) == [] and unsealed(root) == []
    assert read_registry(DataRoot(str(root))).promoted == "run-earlier"

    monkeypatch.undo()
    disk.empty()
    assert train(root)[0] == 0
    assert train(cold)[0] == 0
    assert leftovers(root) == [] and unsealed(root) == []
    assert shard_bytes(root) == shard_bytes(cold)
    (cold_model,) = (cold / "models").glob("run-*")
    assert cold_model.name == model.parent.name  # the same run: the same inputs and settings
    for name in ("history.csv", "labels.json", "audio.json"):
        assert (model.parent / name).read_bytes() == (cold_model / name).read_bytes(), name
    got = keras.saving.load_model(model, safe_mode=True).get_weights()
    expected = keras.saving.load_model(cold_model / "model.keras", safe_mode=True).get_weights()
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
    cold_report = cold / "reports" / cold_model.name
    assert sorted(p.name for p in report.iterdir()) == sorted(p.name for p in cold_report.iterdir())
    for name in ("evaluation.json", "predictions.parquet", "confusion.png"):
        assert (report / name).read_bytes() == (cold_report / name).read_bytes(), name
    registries = [read_registry(DataRoot(str(folder))) for folder in (root, cold)]
    assert [r.promoted for r in registries] == ["run-earlier", "run-earlier"]
    decisions = [[(d.run, d.decision) for d in r.history] for r in registries]
    assert decisions[0] == decisions[1] and decisions[0][-1] == (model.parent.name, "rejected")


def test_a_full_disk_while_history_csv_is_written_keeps_it_whole(tmp_path: Path, disk: Disk) -> None:
    """history.csv gains a row as each epoch ends. Appended, a row cut by a full disk at a page boundary could
    leave the first digit of its epoch ("6" of "60,..."), which the resumed run read as an earlier epoch's row:
    its history then differed from a cold run's. Here the 60th row meets a full tmpfs exactly there; the file
    must stay as it was, and the resumed run must write a cold run's bytes. The ledger is the callback that
    writes the file (model/train.py); 60 real epochs would only add minutes."""
    from genreflow.model.train import _ResumeLedger, read_history

    def logs(epoch: int) -> dict[str, float]:
        # Values whose reprs are 15 or 16 characters: the 59 rows then end one byte before a page boundary.
        width = [16 if 4 * epoch + i < 109 else 15 for i in range(4)]
        values = [float(f"0.5{4 * epoch + i + 1:0{w - 4}d}7") for i, w in enumerate(width)]
        return dict(zip(["accuracy", "loss", "val_accuracy", "val_loss"], values, strict=True))

    def ledger_at(history: Path, done: int) -> _ResumeLedger:
        ledger = _ResumeLedger(history, history.parent / "backup")
        ledger.begin(done)  # as the first epoch of a (resumed) run does
        return ledger

    disk.mount_tmpfs(64 * 1024)
    history, cold = disk.mount / "run" / "history.csv", tmp_path / "cold" / "history.csv"
    for path in (history, cold):
        path.parent.mkdir()
    ledger, cold_ledger = ledger_at(history, 0), ledger_at(cold, 0)
    for epoch in range(59):
        ledger.on_epoch_end(epoch, logs(epoch))
    assert history.stat().st_size == PAGE - 1
    before = history.read_bytes()

    disk.fill()
    with pytest.raises(OSError) as raised:
        ledger.on_epoch_end(59, logs(59))
    assert str(disk_full_error(raised.value)).startswith(f"cannot write {history}: the disk is full")
    assert history.read_bytes() == before and leftovers(disk.mount) == []

    disk.empty()
    resumed = ledger_at(history, 59)  # the backup holds 59 epochs: the rerun redoes the 60th
    resumed.on_epoch_end(59, logs(59))
    for epoch in range(60):
        cold_ledger.on_epoch_end(epoch, logs(epoch))
    assert history.read_bytes() == cold.read_bytes()
    assert read_history(history)["epoch"].tolist() == list(range(1, 61))


# --------------------------------------------------------------------------- a library prediction bucket

BUCKET = re.compile(r"/predict-[^/]+/b\d+-\d+\.parquet$")  # a bucket's table (tasks/predict.py _write_bucket)


def test_disk_full_while_a_library_prediction_bucket_is_written(
    tmp_path: Path, demo_dir: Path, disk: Disk, threads_cluster: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    """``predict LIBRARY --work`` on a tmpfs that fills just before the second bucket's table: the first bucket
    stays sealed, the second is not claimed; the rerun predicts the rest and writes a cold run's table."""
    from tests.model.test_export import save_model  # TensorFlow: only for this test

    model = save_model(tmp_path / "models" / "run-library", "genreflow")
    disk.mount_tmpfs(2 << 20)
    work, out = disk.mount / "work", tmp_path / "library.parquet"

    def predict(out: Path, work: Path) -> tuple[int, str]:
        code = main(["predict", str(demo_dir), "--model", str(model), "--out", str(out), "--work", str(work),
                     "--shard-size", "3", "--retries", "0", "--local-max", "0", "--dask-address", threads_cluster])
        return code, capsys.readouterr().err

    buckets: list[str] = []

    def second_bucket(path: str) -> bool:
        if BUCKET.search(path):
            buckets.append(path)
        return len(buckets) == 2

    fired = fill_before(monkeypatch, disk, second_bucket)
    code, err = predict(out, work)
    line = one_error_line(err)
    assert fired and code == 1, err
    assert line.startswith(f"genreflow: error: cannot write {fired[0]}: the disk is full"), err
    assert fired[0].startswith(f"{work}/")
    bucket = Path(fired[0])
    assert not bucket.exists() and not bucket.with_suffix(".manifest.json").exists()
    first = Path(buckets[0])
    sealed = (first.read_bytes(), first.stat().st_mtime_ns)  # written before the disk filled: kept, sealed
    assert first.with_suffix(".manifest.json").is_file()
    assert leftovers(disk.mount) == [] and unsealed(work) == []
    assert not out.exists()

    monkeypatch.undo()
    disk.empty()
    assert predict(out, work)[0] == 0
    assert (first.read_bytes(), first.stat().st_mtime_ns) == sealed  # not predicted again
    assert leftovers(disk.mount) == [] and unsealed(work) == []
    assert predict(tmp_path / "cold.parquet", tmp_path / "cold-work")[0] == 0
    got, cold = pd.read_parquet(out), pd.read_parquet(tmp_path / "cold.parquet")
    assert len(got) == got["path"].nunique() == len(list(demo_dir.rglob("*.mp3"))) and (got["error"] == "").all()
    pd.testing.assert_frame_equal(got, cold)


def test_a_library_prediction_that_will_not_fit_stops_before_it_starts(
    tmp_path: Path, demo_dir: Path, disk: Disk, threads_cluster: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The precheck of ``predict LIBRARY``: with no bucket sealed in the work root it counts a floor a bucket;
    with some sealed, their bytes a file times the files of the buckets left. Either way it refuses before a
    bucket is written, naming the estimate; with the space freed the run completes as a cold one."""
    from genreflow.storage.manifest import read_manifest
    from genreflow.storage.space import BUCKET_FLOOR, human_bytes
    from tests.model.test_export import save_model  # TensorFlow: only for this test

    model = save_model(tmp_path / "models" / "run-library", "genreflow")

    def predict(out: Path, work: Path) -> tuple[int, str]:
        code = main(["predict", str(demo_dir), "--model", str(model), "--out", str(out), "--work", str(work),
                     "--shard-size", "3", "--retries", "0", "--local-max", "0", "--dask-address", threads_cluster])
        return code, capsys.readouterr().err

    assert predict(tmp_path / "cold.parquet", tmp_path / "cold-work")[0] == 0
    buckets = sorted((tmp_path / "cold-work").glob("predict-*/b*.manifest.json"))
    disk.mount_tmpfs(2 << 20)
    work, out = disk.mount / "work", tmp_path / "library.parquet"

    # Nothing sealed: a floor a bucket.
    disk.fill(leave=2 * PAGE)
    code, err = predict(out, work)
    line = one_error_line(err)
    assert code == 1 and line.startswith(f"genreflow: error: {work}: not enough space for predicting: about "), err
    floor = f"({len(buckets)} buckets x {human_bytes(BUCKET_FLOOR)} at the least)"
    assert floor in line and "KiB free" in line and "finished outputs took" not in line
    assert {p.name for p in work.rglob("*")} <= {".genreflow.lock"} and not out.exists()  # nothing started

    # Two buckets left: at the bytes a file took in the sealed ones.
    disk.empty()
    shutil.rmtree(work)
    shutil.copytree(tmp_path / "cold-work", work)
    cold = DataRoot(str(tmp_path / "cold-work"))
    manifests = {path: read_manifest(cold, str(path)) for path in buckets}
    gone = buckets[:2]
    for path in gone:
        for file in work.glob(f"{path.parent.name}/{path.name.split('.')[0]}.*"):
            file.unlink()
    kept = [m for path, m in manifests.items() if path not in gone and m is not None]
    per_file = sum(e.size for m in kept for e in m.files.values()) / sum(m.rows for m in kept)
    files = sum(m.rows for path, m in manifests.items() if path in gone and m is not None)
    disk.fill(leave=2 * PAGE)
    code, err = predict(out, work)
    line = one_error_line(err)
    assert code == 1 and "not enough space for predicting" in line, err
    assert f"({files} files x {human_bytes(per_file)}), as the finished outputs took" in line
    assert not any(work.glob(f"{gone[0].parent.name}/{gone[0].name.split('.')[0]}.*")) and not out.exists()

    disk.empty()
    assert predict(out, work)[0] == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(tmp_path / "cold.parquet"))
    assert leftovers(disk.mount) == [] and unsealed(work) == []
