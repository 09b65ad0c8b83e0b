"""The DAG's plan: which outputs a configuration needs and the fingerprint of each.

Both the flows and ``genreflow status`` use it, so "done" means the same thing
to both: an output whose manifest carries exactly the fingerprint planned here.
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

from genreflow.flows.config import Config
from genreflow.model.params import RECIPE_KNOBS, TrainConfig
from genreflow.storage.fingerprint import fingerprint
from genreflow.tasks.common import ShardPlan

MODEL_ARCHITECTURE = "cnn-v3"  # bump when model/ changes what a configuration trains
BASELINE_VERSION = "mfcc-svm-v1"  # likewise for tasks/baseline.py


def _file_identity(path: str) -> tuple[int, int]:
    """(size, mtime in ns) of a source file, so an edited file makes its shard stale."""
    try:
        stat = os.stat(path)
    except OSError:
        return (-1, -1)
    return (stat.st_size, stat.st_mtime_ns)


def plan_shards(tracks: pd.DataFrame, config: Config) -> list[ShardPlan]:
    """A ShardPlan per shard of ``tracks`` (the ingest table)."""
    audio = config.audio
    decode_params = {"sr": audio.sample_rate, "clip_seconds": audio.clip_seconds,
                     "clips_per_track": audio.clips_per_track}
    mel_params = {"n_fft": audio.n_fft, "hop_length": audio.hop_length, "n_mels": audio.n_mels}
    plans = []
    for shard, group in tracks.groupby("shard", sort=True):
        group = group.reset_index(drop=True)
        rows = [(t.track_id, t.path, t.genre, t.split, *_file_identity(t.path)) for t in group.itertuples()]
        decode = fingerprint("decode", rows, decode_params)
        split = str(group["split"].iloc[0])
        augment = (fingerprint("augment", decode, mel_params, config.augment)
                   if split == "train" and config.augment.names() else None)
        plans.append(ShardPlan(str(shard), split, group, decode, fingerprint("mel", decode, mel_params),
                               augment))
    return plans


def training_inputs(plans: list[ShardPlan]) -> list[tuple[str, str]]:
    """(stage, shard) of every array that training reads: train mel plus its augmented copies."""
    inputs = [("mel", p.shard) for p in plans if p.split == "train"]
    return inputs + [("mel-aug", p.shard) for p in plans if p.augment is not None]


def stats_fingerprint(plans: list[ShardPlan]) -> str:
    return fingerprint("stats", [p.fingerprint_of(stage) for stage, p in _inputs_with_plans(plans)])


def training_params(train: TrainConfig) -> dict[str, Any]:
    """What decides a trained model: the hyper-parameters and the recipe's knobs as resolved.

    Two configurations that resolve to the same model (a knob left to the recipe,
    or set to the recipe's own value) train the same run; ``folds`` and
    ``baseline`` change which runs there are, not what one learns.
    """
    fields = train.model_dump(exclude={"folds", "baseline", "recipe", *RECIPE_KNOBS})
    return {**fields, **train.knobs()}


def run_name(plans: list[ShardPlan], config: Config) -> str:
    """The training run's name: a hash of every input and hyper-parameter, so that an
    unchanged rerun finds its finished model and a killed one its checkpoint."""
    shards = [(p.shard, p.mel, p.augment) for p in plans]
    return "run-" + fingerprint("train", MODEL_ARCHITECTURE, stats_fingerprint(plans), shards,
                                training_params(config.train))[:12]


def crossval_name(plans: list[ShardPlan], config: Config) -> str:
    """The cross-validation's name: a hash of the shards, the folds asked for and the training."""
    shards = [(p.shard, p.mel, p.augment) for p in plans]
    return "cv-" + fingerprint("crossval", MODEL_ARCHITECTURE, shards, config.train.folds, config.split.split_seed,
                               config.split.val_fraction, training_params(config.train))[:12]


def baseline_fingerprint(plans: list[ShardPlan], seed: int) -> str:
    """The baseline of the single split: its mel shards (train, val, test) and seed."""
    return fingerprint("baseline", BASELINE_VERSION, [(p.shard, p.split, p.mel) for p in plans], seed)


def _inputs_with_plans(plans: list[ShardPlan]) -> list[tuple[str, ShardPlan]]:
    by_shard = {p.shard: p for p in plans}
    return [(stage, by_shard[shard]) for stage, shard in training_inputs(plans)]
