"""Training of the seed CNN from mel shards, resumable after the process is killed.

Files in ``out_dir``::

    model.keras     best weights by the monitored loss, normalisation included
    labels.json     the genres, in label order
    history.csv     epoch (1-based), accuracy, loss, val_accuracy, val_loss: one row a finished epoch
    backup/         Keras BackupAndRestore state + best-<epoch>.npz; removed after success

A rerun after a crash restores the last finished epoch from ``backup/``,
truncates history.csv to the epochs that backup holds, and restores the early
stopping state (best loss, its weights, epochs waited) from history and the
best-weights file, so the result is the same kind of model an uninterrupted
run would give.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genreflow.model.batch_augment import BatchAugment
from genreflow.model.cnn import build_cnn, compile_model
from genreflow.model.dataset import ClipSource, EpochOrder, clip_dataset, steps_per_epoch
from genreflow.model.files import BACKUP_DIR, HISTORY_FILE, LABELS_FILE, MODEL_FILE
from genreflow.model.params import RECIPE_KNOBS, RECIPES
from genreflow.model.quiet_tf import keras, tf
from genreflow.storage.files import write_then_move

logger = logging.getLogger(__name__)

HISTORY_COLUMNS = ("epoch", "accuracy", "loss", "val_accuracy", "val_loss")
_BEST_FILE = re.compile(r"best-(\d+)\.npz")

Progress = Callable[[int, int, dict], None]

# The recipe knobs of the seed project (RECIPES["seed"]), used when none are given; crops counted in frames.
SEED_KNOBS: dict[str, Any] = {**{name: RECIPES["seed"][name] for name in RECIPE_KNOBS if name != "crop_seconds"},
                              "crop_frames": 0}


@dataclass(frozen=True)
class TrainResult:
    """What a training run left behind."""

    model_path: Path
    history: pd.DataFrame  # HISTORY_COLUMNS, one row a finished epoch, over all resumed runs
    epochs_run: int  # epochs finished in total, including those before a resume
    resumed_from_epoch: int | None  # 1-based epoch after those restored from a backup; None if none were
    best_epoch: int  # 1-based epoch whose weights were saved; 0 if no epoch has a monitored value


def _write_json_atomic(path: Path, payload: Any) -> None:
    text = json.dumps(payload, indent=2)
    write_then_move(path.with_name(f".{path.name}.tmp"), path, lambda tmp: tmp.write_text(text))


def read_history(path: Path) -> pd.DataFrame:
    """history.csv as a frame with HISTORY_COLUMNS (empty if there is none yet)."""
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in HISTORY_COLUMNS}).astype({"epoch": int})
    return pd.read_csv(path)


class _ResumeLedger(keras.callbacks.Callback):
    """history.csv and best-weights files, kept consistent with the epoch Keras actually resumes at.

    The first ``on_epoch_begin`` tells where BackupAndRestore restored training
    (whichever backup copy it managed to load), so history rows and best-weights
    files from epochs after it, written by a run killed before its backup, are
    dropped there. The file is rewritten whole as each epoch ends, before the
    backup of that epoch is written (this callback precedes BackupAndRestore).
    """

    def __init__(self, history_path: Path, backup_dir: Path) -> None:
        super().__init__()
        self.history_path = history_path
        self.backup_dir = backup_dir
        self.start_epoch: int | None = None  # 0-based epoch this process started at
        self.rows: pd.DataFrame = read_history(history_path)

    def begin(self, epochs_done: int) -> None:
        """Drop what lies beyond ``epochs_done`` finished epochs; called once, at the start."""
        if self.start_epoch is not None:
            return
        self.start_epoch = epochs_done
        rows = read_history(self.history_path)
        if len(rows) < epochs_done:
            logger.warning(
                "history.csv holds %d epochs but the backup %d: the missing rows are lost",
                len(rows),
                epochs_done,
            )
        self.rows = rows[rows["epoch"] <= epochs_done].reset_index(drop=True)
        self._rewrite()

    def _rewrite(self) -> None:
        """history.csv whole or not at all: a full disk keeps the previous file, never a torn last row.

        An appended row could end half-written (ENOSPC mid-line), and a row cut
        to the first digits of its epoch ("4" of "40,...") passes as an earlier
        epoch, so the resumed history would differ from a cold run's (issue 25).
        The file is fsynced before the move, so the row is on disk before the
        epoch's backup says the epoch is finished.
        """
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as handle:
                self.rows.to_csv(handle, index=False, columns=list(HISTORY_COLUMNS))
                handle.flush()
                os.fsync(handle.fileno())

        write_then_move(self.history_path.with_name(f".{self.history_path.name}.tmp"), self.history_path, write)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.begin(epoch)

    def on_train_end(self, logs: dict | None = None) -> None:
        # No epoch ran: the backup already held every epoch.
        self.begin(self.params.get("epochs", len(self.rows)))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        row = {"epoch": epoch + 1, **{c: float(logs.get(c, np.nan)) for c in HISTORY_COLUMNS[1:]}}
        self.rows = pd.DataFrame([*self.rows.to_dict("records"), row], columns=list(HISTORY_COLUMNS))
        self._rewrite()

    # ---- best weights ------------------------------------------------------
    def best_files(self) -> dict[int, Path]:
        """best-<epoch>.npz files by 1-based epoch."""
        if not self.backup_dir.exists():
            return {}
        found = {}
        for path in self.backup_dir.iterdir():
            match = _BEST_FILE.fullmatch(path.name)
            if match:
                found[int(match.group(1))] = path
        return found

    def save_best(self, epoch: int, weights: list[np.ndarray]) -> None:
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        final = self.backup_dir / f"best-{epoch:04d}.npz"
        write_then_move(self.backup_dir / f".best-{epoch:04d}.tmp.npz", final, lambda tmp: np.savez(tmp, *weights))

    def keep_only_best(self, epoch: int | None) -> None:
        """Remove best-weight files other than ``epoch``'s (1-based)."""
        for found_epoch, path in self.best_files().items():
            if found_epoch != epoch:
                path.unlink()

    def load_best(self, epoch: int) -> list[np.ndarray] | None:
        path = self.best_files().get(epoch)
        if path is None:
            return None
        with np.load(path, allow_pickle=False) as saved:
            return [saved[f"arr_{i}"] for i in range(len(saved.files))]


class _ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping whose best value, best weights and patience count survive a restart."""

    def __init__(self, ledger: _ResumeLedger, monitor: str, patience: int) -> None:
        super().__init__(monitor=monitor, patience=patience, restore_best_weights=True, verbose=0)
        self.ledger = ledger
        self._resumed = False

    def _resume(self) -> None:
        """Take the state of the epochs before this process from the (truncated) history."""
        if self._resumed:
            return
        self._resumed = True
        values = self.ledger.rows[self.monitor].dropna() if len(self.ledger.rows) else pd.Series()
        if values.empty:
            self.ledger.keep_only_best(None)
            return
        best_row = int(values.idxmin())
        best_epoch = int(self.ledger.rows.loc[best_row, "epoch"])  # 1-based
        weights = self.ledger.load_best(best_epoch)
        if weights is None:
            logger.warning("best weights of epoch %d were not saved; early stopping starts afresh", best_epoch)
            self.ledger.keep_only_best(None)
            return
        self.best = float(values.loc[best_row])
        self.best_epoch = best_epoch - 1
        self.best_weights = weights
        self.wait = len(self.ledger.rows) - best_epoch
        self.ledger.keep_only_best(best_epoch)
        logger.info("restored early stopping: best %s %.4f at epoch %d", self.monitor, self.best, best_epoch)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._resume()
        # The previous epoch's backup is written by now, so older best files can go.
        self.ledger.keep_only_best(self.best_epoch + 1 if self.best is not None else None)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch, logs)
        if self.best_epoch == epoch and self.best_weights is not None:
            self.ledger.save_best(epoch + 1, self.best_weights)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._resume()
        super().on_train_end(logs)


class _EpochSeeds(keras.callbacks.Callback):
    """Make each epoch's randomness a function of (seed, epoch): the clip order and the dropout masks.

    BackupAndRestore restores weights and optimizer state, not the RNG state of
    the input pipeline or of the Dropout layers' seed generators, so without
    this a run resumed at epoch k would draw other orders and masks than an
    uninterrupted run and end with other weights. Each seed generator's state
    is [seed, draws]; its draw counter is set to a fixed point per epoch.
    """

    STRIDE = 1 << 32  # draws reserved per epoch; far more than any epoch's steps

    def __init__(self, order: EpochOrder) -> None:
        super().__init__()
        self.order = order

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.order.start(epoch)
        for variable in self.model.variables:
            if variable.path.endswith("seed_generator_state"):
                seed = variable.numpy()[0]
                variable.assign(np.asarray([seed, epoch * self.STRIDE], dtype=variable.dtype))


class _ProgressCallback(keras.callbacks.Callback):
    """Reports (1-based epoch, epochs, logs) to a plain function at each epoch end."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.progress(epoch + 1, self.params.get("epochs", 0), {k: float(v) for k, v in (logs or {}).items()})


def _stopped_early(history: pd.DataFrame, monitor: str, patience: int) -> bool:
    """Whether early stopping had already ended the run that ``history`` records."""
    values = history[monitor].dropna()
    if values.empty:
        return False
    best_epoch = int(history.loc[values.idxmin(), "epoch"])
    return len(history) > 1 and len(history) - best_epoch >= patience


def _backup_epochs(backup_dir: Path) -> int:
    """Finished epochs recorded by BackupAndRestore (0 when there is no backup)."""
    metadata = backup_dir / "training_metadata.json"
    if not metadata.exists():
        return 0
    try:
        return int(json.loads(metadata.read_text())["epoch"])
    except (ValueError, KeyError, OSError):
        return 0


def _learning_rate(base: float, schedule: str, epochs: int,
                   steps: int) -> float | keras.optimizers.schedules.CosineDecay:
    """The constant rate, or a cosine decay from it to 1 % over every planned step.

    A function of the optimizer's step count only, which BackupAndRestore
    restores, so a resumed run continues the same curve.
    """
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(base, decay_steps=max(1, epochs * steps), alpha=0.01)
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


def class_weights(sources: Sequence[ClipSource], label_of: Mapping[str, int]) -> dict[int, float]:
    """Weight of each label: n_clips / (n_labels * clips of that label), so every genre weighs the same."""
    counts = pd.concat([s.index["genre"] for s in sources]).map(label_of).value_counts()
    total = float(counts.sum())
    return {int(label): total / (len(label_of) * float(counts.get(label, 0) or 1)) for label in label_of.values()}


def train_model(
    train: list[ClipSource],
    val: list[ClipSource],
    genres: list[str],
    stats: Mapping[str, list[float]],
    out_dir: Path,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    patience: int,
    seed: int,
    shuffle_buffer: int = 2048,
    progress: Progress | None = None,
    input_shape: Sequence[int] | None = None,
    deterministic: bool = True,
    knobs: Mapping[str, Any] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> TrainResult:
    """Train the CNN on ``train``, stopping early on ``val`` loss; resumable.

    ``genres`` gives the label order. ``stats`` holds the per-band "mean" and
    "std" of the training clips. ``input_shape`` defaults to (n_mels, frames, 1)
    of the shards. ``knobs`` are the recipe's (flows.config.TrainConfig.knobs:
    batch_norm, time_pooling, spec_augment, mixup, label_smoothing, lr_schedule,
    class_weights, with crop_seconds as crop_frames); None is the seed's recipe. With ``deterministic``,
    TensorFlow's op determinism is switched on (process-wide) so that the same
    seed gives the same weights. A run that finds a backup in ``out_dir``
    continues it, so ``out_dir`` must belong to one configuration (the flow
    names it after its fingerprint). ``callbacks`` run after genreflow's own
    (a benchmark's clock, a profiler).
    """
    knobs = {**SEED_KNOBS, **(knobs or {})}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    backup_dir, history_path = out_dir / BACKUP_DIR, out_dir / HISTORY_FILE
    label_of = {genre: i for i, genre in enumerate(genres)}
    if len(label_of) != len(genres):
        raise ValueError(f"genres must be unique: {genres}")

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    order = EpochOrder(seed)
    data = _training_data(train, val, label_of, stats, batch_size, seed, shuffle_buffer, order, knobs, input_shape)
    epochs = _resume_point(out_dir, data.monitor, patience, epochs)

    model = build_cnn(
        len(genres),
        input_shape=data.shape,
        band_mean=np.asarray(stats["mean"], dtype=np.float64),
        band_std=np.asarray(stats["std"], dtype=np.float64),
        seed=seed,
        batch_norm=bool(knobs["batch_norm"]),
        time_pooling=bool(knobs["time_pooling"]),
    )
    rate = _learning_rate(learning_rate, knobs["lr_schedule"], epochs, steps_per_epoch(train, batch_size))
    compile_model(model, rate, label_smoothing=float(knobs["label_smoothing"]), one_hot=data.one_hot)

    ledger = _ResumeLedger(history_path, backup_dir)
    stopping = _ResumableEarlyStopping(ledger, monitor=data.monitor, patience=patience)
    # Order matters: each epoch's history row and best weights are on disk
    # before BackupAndRestore records the epoch as finished.
    own: list[keras.callbacks.Callback] = [
        _EpochSeeds(order),
        ledger,
        stopping,
        keras.callbacks.BackupAndRestore(backup_dir=str(backup_dir), double_checkpoint=True, delete_checkpoint=False),
    ]
    if progress is not None:
        own.append(_ProgressCallback(progress))
    weights = class_weights(train, label_of) if knobs["class_weights"] else None
    model.fit(data.train, validation_data=data.val, epochs=epochs, callbacks=[*own, *callbacks], shuffle=False,
              verbose=0, class_weight=weights)

    model_path = _save_model(model, out_dir, genres)
    history = read_history(history_path)
    start = ledger.start_epoch or 0
    best_epoch = stopping.best_epoch + 1 if stopping.best is not None else 0
    logger.info("trained %d epochs; best %s at epoch %d; saved %s", len(history), data.monitor, best_epoch,
                model_path)
    return TrainResult(model_path=model_path, history=history, epochs_run=len(history),
                       resumed_from_epoch=start + 1 if start > 0 else None, best_epoch=best_epoch)


@dataclass(frozen=True)
class _TrainingData:
    """The tf.data pipelines of one training, and what they decide about it."""

    train: tf.data.Dataset
    val: tf.data.Dataset | None
    monitor: str  # val_loss, or loss without validation clips
    shape: tuple[int, ...]  # the model's input: the clips as the shards hold them
    one_hot: bool  # label vectors (mixup, smoothing) instead of integer labels


def _training_data(train: list[ClipSource], val: list[ClipSource], label_of: dict[str, int],
                   stats: Mapping[str, list[float]], batch_size: int, seed: int, shuffle_buffer: int,
                   order: EpochOrder, knobs: Mapping[str, Any], input_shape: Sequence[int] | None) -> _TrainingData:
    augment = BatchAugment(seed, np.asarray(stats["mean"], dtype=np.float32), spec_augment=bool(knobs["spec_augment"]),
                           mixup=float(knobs["mixup"]), crop=int(knobs["crop_frames"]))
    if augment.crop and not knobs["time_pooling"]:
        raise ValueError("random crops need time pooling: the seed's Flatten takes one clip length")
    # Integer labels and the seed's sparse loss unless mixup or smoothing need label vectors.
    one_hot = augment.active or knobs["label_smoothing"] > 0
    train_data = clip_dataset(train, label_of, batch_size, shuffle=True, seed=seed, shuffle_buffer=shuffle_buffer,
                              order=order, one_hot=one_hot, augment=augment)
    has_val = any(len(s) for s in val)
    val_data = (clip_dataset(val, label_of, batch_size, shuffle=False, seed=seed, one_hot=one_hot)
                if has_val else None)
    if not has_val:
        logger.warning("no validation clips: early stopping and the saved weights follow the training loss")
    # The clips as the shards hold them (validation and test see whole clips, also when training crops).
    data_shape = (*clip_dataset(train, label_of, batch_size, shuffle=False, seed=seed).element_spec[0].shape[1:],)
    shape = tuple(int(d) for d in (input_shape or data_shape))
    if shape != data_shape:
        raise ValueError(f"input_shape {shape} does not match the shards' clips {data_shape}")
    return _TrainingData(train_data, val_data, "val_loss" if has_val else "loss", shape, one_hot)


def _resume_point(out_dir: Path, monitor: str, patience: int, epochs: int) -> int:
    """The epochs to train to: ``epochs``, or the epoch early stopping had already ended a killed run at.

    A fresh start clears leftovers of a finished or unrelated run, so that no old
    model stands next to a new, partial history.
    """
    backup_dir, history_path = out_dir / BACKUP_DIR, out_dir / HISTORY_FILE
    done = _backup_epochs(backup_dir)
    if done == 0:
        shutil.rmtree(backup_dir, ignore_errors=True)
        history_path.unlink(missing_ok=True)
        (out_dir / MODEL_FILE).unlink(missing_ok=True)
        return epochs
    logger.info("resuming training after epoch %d from %s", done, backup_dir)
    before = read_history(history_path)
    if _stopped_early(before[before["epoch"] <= done], monitor, patience):
        # Killed after early stopping but before the model was saved: train no further.
        logger.info("early stopping had ended training at epoch %d; saving the best weights", done)
        return done
    return epochs


def _save_model(model: keras.Model, out_dir: Path, genres: list[str]) -> Path:
    """labels.json and model.keras, each written whole or not at all; then the backup goes."""
    _write_json_atomic(out_dir / LABELS_FILE, list(genres))
    model_path = out_dir / MODEL_FILE
    write_then_move(out_dir / f".{MODEL_FILE}.tmp.keras", model_path, model.save)
    shutil.rmtree(out_dir / BACKUP_DIR, ignore_errors=True)
    return model_path
