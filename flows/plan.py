"""The DAG's plan: which outputs a configuration needs, and what each is made from.

The flows, ``genreflow status`` and the bench all plan with these functions,
so "done" means the same thing to each: an output whose manifest records the
fingerprint of the OutputSpec planned here (storage/outputs.py computes it from
the stage's code version, its inputs and its parameters), and no other version
of the libraries that make the stage's output (tasks/stages.py, stage_libraries).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from genreflow.flows.config import Config
from genreflow.model.params import MODEL_FAMILY_FIELDS, RECIPE_KNOBS, TrainConfig
from genreflow.model.weights import MUSICNN, find_weights, weights_checksum
from genreflow.storage.outputs import OutputSpec
from genreflow.tasks.evaluate import INPUT_STAGES
from genreflow.tasks.stages import stage_code, stage_libraries
from genreflow.tasks.workers import ShardPlan


def _file_identity(path: str) -> tuple[int, int]:
    """(size, mtime in ns) of a source file, so an edited file makes its shard stale."""
    try:
        stat = os.stat(path)
    except OSError:
        return (-1, -1)
    return (stat.st_size, stat.st_mtime_ns)


def embedding_weights(train: TrainConfig) -> Path | None:
    """The musicnn weights the embedding family uses, or None when this configuration trains no embedding model.

    ``--family best`` trains it where the weights are in the cache; ``--family
    embedding`` fetches them first (flows/preprocess.py); ``--family cnn`` never.
    """
    return None if train.family == "cnn" else find_weights(MUSICNN, train.weights_dir)


def embed_params(train: TrainConfig) -> dict[str, str]:
    """What an embed shard holds besides its audio: which musicnn weights and which layer."""
    return {"model": train.embedding_model, "feature": train.embedding_feature}


def plan_shards(tracks: pd.DataFrame, config: Config) -> list[ShardPlan]:
    """A ShardPlan per shard of ``tracks`` (the ingest table)."""
    audio = config.audio
    decode_params = {"sr": audio.sample_rate, "clip_seconds": audio.clip_seconds,
                     "clips_per_track": audio.clips_per_track}
    mel_params = {"n_fft": audio.n_fft, "hop_length": audio.hop_length, "n_mels": audio.n_mels}
    codes = {stage: stage_code(stage) for stage in ("decode", "mel", "augment", "embed")}
    libraries = {stage: stage_libraries(stage) for stage in codes}
    embedding = embedding_weights(config.train) is not None
    plans = []
    tracks = tracks.reset_index(drop=True)
    # The columns as lists, read once: per-shard itertuples (a namedtuple class and an Arrow iteration a
    # shard) was most of plan_shards, and so of `genreflow status`, at 100,000 tracks (docs/benchmarks.md).
    ids, paths, genres, splits = (tracks[name].tolist() for name in ("track_id", "path", "genre", "split"))
    for shard, positions in tracks.groupby("shard", sort=True).indices.items():
        group = tracks.iloc[positions].reset_index(drop=True)
        shard = str(shard)
        rows = [(ids[i], paths[i], genres[i], splits[i], *_file_identity(paths[i])) for i in positions]
        decode = OutputSpec("decode", shard, codes["decode"], rows, decode_params, libraries["decode"])
        split = str(group["split"].iloc[0])
        augment = (OutputSpec("augment", shard, codes["augment"], [decode.fingerprint], [mel_params, config.augment],
                              libraries["augment"]) if split == "train" and config.augment.names() else None)
        mel = OutputSpec("mel", shard, codes["mel"], [decode.fingerprint], mel_params, libraries["mel"])
        embed = (OutputSpec("embed", shard, codes["embed"], [decode.fingerprint, weights_checksum()],
                            embed_params(config.train), libraries["embed"]) if embedding else None)
        plans.append(ShardPlan(shard, split, group, decode, mel, augment, embed))
    return plans


def training_inputs(plans: list[ShardPlan]) -> list[tuple[str, str]]:
    """(stage, shard) of every array that training reads: train mel plus its augmented copies."""
    inputs = [("mel", p.shard) for p in plans if p.split == "train"]
    return inputs + [("augment", p.shard) for p in plans if p.augment is not None]


def split_shards(plans: list[ShardPlan], split: str) -> list[tuple[str, str]]:
    """(stage, shard) of the original mel clips of one split."""
    return [("mel", p.shard) for p in plans if p.split == split]


def shard_names(plans: list[ShardPlan], split: str) -> list[str]:
    """The shards of one split, by name: each model family reads its own stage of them (tasks/evaluate.py)."""
    return [p.shard for p in plans if p.split == split]


def _training_specs(plans: list[ShardPlan]) -> list[OutputSpec]:
    specs = [p.mel for p in plans if p.split == "train"]
    return specs + [p.augment for p in plans if p.augment is not None]


def stats_spec(plans: list[ShardPlan]) -> OutputSpec:
    """stats.json: made from the training clips (mel and augmented)."""
    return OutputSpec("stats", code=stage_code("stats"), inputs=[s.fingerprint for s in _training_specs(plans)],
                      libraries=stage_libraries("stats"))


def baseline_spec(plans: list[ShardPlan], seed: int) -> OutputSpec:
    """The baseline of the single split: its mel shards of every split, and its seed; keyed by its fingerprint."""
    spec = OutputSpec("baseline", code=stage_code("baseline"),
                      inputs=[(p.shard, p.split, p.mel.fingerprint) for p in plans], params={"seed": seed},
                      libraries=stage_libraries("baseline"))
    return spec.with_key(spec.fingerprint[:12])


def training_params(train: TrainConfig) -> dict[str, Any]:
    """What decides a trained model: the hyper-parameters and the recipe's knobs as resolved.

    Two configurations that resolve to the same model (a knob left to the recipe,
    or set to the recipe's own value) train the same run; ``folds`` and
    ``baseline`` change which runs there are, not what one learns.
    """
    fields = train.model_dump(exclude={"folds", "baseline", "recipe", *RECIPE_KNOBS, *MODEL_FAMILY_FIELDS})
    return {**fields, **train.knobs()}


def train_spec(plans: list[ShardPlan], config: Config) -> OutputSpec:
    """The trained model: named ``run-`` plus its fingerprint, so that an unchanged rerun finds its
    finished model and a killed one its checkpoint."""
    shards = [(p.shard, p.mel.fingerprint, p.augment.fingerprint if p.augment else None) for p in plans]
    spec = OutputSpec("train", code=stage_code("train"), inputs=[stats_spec(plans).fingerprint, shards],
                      params=[training_params(config.train), config.audio], libraries=stage_libraries("train"))
    return spec.with_key("run-" + spec.fingerprint[:12])


def evaluate_spec(plans: list[ShardPlan], run: str, model_fingerprint: str, family: str = "cnn") -> OutputSpec:
    """The predictions of the model ``run`` (of that fingerprint and family) on the test split, and its scores on
    the validation split: reports/<run>/."""
    def shards(split: str) -> list[str | None]:
        outputs = [p.output(INPUT_STAGES[family]) for p in plans if p.split == split]
        return [output.fingerprint if output else None for output in outputs]

    return OutputSpec("evaluate", run, stage_code("evaluate"), [model_fingerprint, shards("test"), shards("val")],
                      libraries=stage_libraries("evaluate"))


def embedding_model_spec(plans: list[ShardPlan], config: Config) -> OutputSpec | None:
    """The embedding model: its head's fit on the train and validation embed shards; ``emb-`` plus its fingerprint.
    None when the plan has no embed shards."""
    shards = [(p.shard, p.split, p.embed.fingerprint) for p in plans if p.embed and p.split in ("train", "val")]
    if not shards:
        return None
    spec = OutputSpec("train", code=stage_code("head"), inputs=shards,
                      params=[embed_params(config.train), config.train.seed, config.audio],
                      libraries=stage_libraries("head"))
    return spec.with_key("emb-" + spec.fingerprint[:12])


def promote_spec(evaluate: OutputSpec, config: Config) -> OutputSpec:
    """The gate's decision on the evaluated run: decided once per evaluation and policy."""
    return OutputSpec("promote", evaluate.key, stage_code("promote"), [evaluate.fingerprint],
                      [config.run.promote, config.run.promote_tolerance], stage_libraries("promote"))


def report_spec(evaluate: OutputSpec, inputs: list[OutputSpec | None], config: Config,
                changes: dict[str, Any] | None = None, promotion: dict[str, Any] | None = None) -> OutputSpec:
    """The report of a run: its evaluation, the outputs shown beside it (baseline, promotion), what changed
    and the configuration; ``promotion``'s decision too, as a decision is made again when the registry has
    moved on (tasks/promote.py decide_once) while its output's fingerprint stays."""
    decision = [promotion.get(key) for key in ("decision", "promoted")] if promotion else None
    return OutputSpec("report", evaluate.key, stage_code("report"),
                      [evaluate.fingerprint, *(spec.fingerprint if spec else None for spec in inputs), changes,
                       decision],
                      # Where runs are tracked changes no report: switching MLflow on must not redo them.
                      config.model_dump(mode="json", exclude={"run": {"mlflow_uri"}}), stage_libraries("report"))


def crossval_specs(plans: list[ShardPlan], config: Config, folds: list[Any]) -> tuple[OutputSpec, list[
        tuple[OutputSpec | None, OutputSpec | None, OutputSpec]]]:
    """The cross-validation's report spec and, per fold, (CNN spec, embedding model spec, result spec); a family
    the configuration does not train is None.

    The cross-validation is named ``cv-`` plus a hash of the shards, the folds
    asked for and the training; a fold's CNN ``<cv>/fold-<n>``, its embedding
    model ``<cv>/fold-<n>-embedding``.
    """
    shards = [(p.shard, p.mel.fingerprint, p.augment.fingerprint if p.augment else None) for p in plans]
    params = [config.train.folds, config.split.split_seed, config.split.val_fraction, training_params(config.train),
              config.audio]
    report = OutputSpec("crossval", code=stage_code("crossval"), inputs=shards, params=params,
                        libraries=stage_libraries("crossval"))
    report = report.with_key("cv-" + report.fingerprint[:12])
    embedded = [p.embed.fingerprint for p in plans if p.embed is not None]
    per_fold = []
    for fold in folds:
        key = f"{report.key}/fold-{fold.number}"
        model = (OutputSpec("train", key, stage_code("train"), [shards, fold.train, fold.val, fold.test],
                            [training_params(config.train), config.audio], stage_libraries("train"))
                 if config.train.family != "embedding" else None)
        embedding = (OutputSpec("train", f"{key}-embedding", stage_code("head"), [embedded, fold.train, fold.val],
                                [embed_params(config.train), config.train.seed, config.audio],
                                stage_libraries("head")) if embedded else None)
        result = OutputSpec("fold", key, stage_code("fold"), [spec.fingerprint if spec else None
                                                              for spec in (model, embedding)],
                            {"baseline": config.train.baseline}, stage_libraries("fold"))
        per_fold.append((model, embedding, result))
    return report, per_fold
