"""The one typed configuration that every flow, task and CLI flag maps onto.

Defaults are the seed project's values. Every leaf field has a unique name, so
the CLI can offer each one as ``--field-name`` without ambiguity. Importing it
costs no TensorFlow, Prefect nor scikit-learn: ``genreflow --help`` reads it
(tests/flows/test_cli_imports.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import tomllib
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from genreflow.model.params import RECIPES, AudioConfig, AugmentConfig, Section, TrainConfig
from genreflow.storage.errors import GenreflowError
from genreflow.storage.registry import Policy
from genreflow.tasks.sources import SourceConfig
from genreflow.tasks.split import SplitConfig
from genreflow.tasks.stages import STAGES, Stage

# The demo set must train in minutes on 2 CPU cores: without an explicit
# --epochs, a demo run trains for at most this many epochs.
DEMO_EPOCHS = 6


class ConfigError(GenreflowError, ValueError):
    """A configuration problem, reported to the user as one line."""


def scheduler_address(address: str | None) -> str | None:
    """``--dask-address`` as Dask takes it, a URL (tcp://HOST:8786); a bare host would be read as a file."""
    if address is not None and "://" not in address:
        raise ValueError(f"{address!r} is not a scheduler address like tcp://HOST:8786")
    return address


# How a flow's tasks run on Dask: a rebuild's (RunConfig) and a library prediction's (PredictOptions), one
# definition of each, bounds and check included.
Workers = Annotated[int, Field(ge=1, le=512, description="LocalCluster worker processes")]
DaskAddress = Annotated[str | None, AfterValidator(scheduler_address),
                        Field(description="existing Dask scheduler, tcp://HOST:PORT")]
Retries = Annotated[int, Field(ge=0, le=20, description="retries of a task on transient errors")]


class RunConfig(Section):
    """Where data lives and how the DAG runs."""

    data_root: str = Field("genreflow-data", description="data root: a path or an fsspec URL")
    shard_size: int = Field(50, ge=1, le=5000, description="tracks per shard (one task each)")
    workers: Workers = 2
    dask_address: DaskAddress = None
    from_stage: Stage | None = Field(None, description="force this stage and all after it")
    to_stage: Stage | None = Field(None, description="stop after this stage")
    retries: Retries = 2
    promote: Policy = Field(
        "if-better", description="promote the new model for predict and evaluate: if-better (not worse than the "
                                 "promoted one on the same test tracks, less the tolerance), always or never")
    promote_tolerance: float = Field(0.01, ge=0, le=1, description="track accuracy a new model may lose to the "
                                                                   "promoted one and still be promoted")
    evaluate_run: str | None = Field(None, description="the trained run to evaluate and report (default: the one "
                                                       "this configuration trains; `genreflow evaluate`: the "
                                                       "promoted one)")


class Config(Section):
    """Everything a genreflow run needs; the CLI and config files map onto it."""

    source: SourceConfig = Field(default_factory=SourceConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.split.val_fraction + self.split.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave tracks for training")
        if self.audio.n_fft > self.audio.clip_samples:
            raise ValueError("n_fft is longer than a clip")
        if self.source.source == "demo" and "epochs" not in self.train.model_fields_set:
            self.train.epochs = min(self.train.epochs, DEMO_EPOCHS)
        self._apply_recipe()
        knobs = self.train.knobs()
        if knobs["crop_seconds"] and not knobs["time_pooling"]:
            raise ValueError("crop_seconds needs time_pooling: a model with the seed's Flatten takes one clip length")
        if knobs["crop_seconds"] > self.audio.clip_seconds:
            raise ValueError(f"crop_seconds {knobs['crop_seconds']:g} is longer than a clip "
                             f"({self.audio.clip_seconds:g} s)")
        first, last = self.run.from_stage, self.run.to_stage
        if first and last and STAGES.index(first) > STAGES.index(last):
            raise ValueError(f"--from-stage {first} comes after --to-stage {last}")
        return self

    def _apply_recipe(self) -> None:
        """Fill what the recipe decides outside the train section, where the configuration left it unset."""
        preset = RECIPES[self.train.recipe]
        if "clips_per_track" not in self.audio.model_fields_set:
            self.audio.clips_per_track = preset["clips_per_track"]
        for name in ("time_stretch", "pitch_shift"):
            if name not in self.augment.model_fields_set:
                setattr(self.augment, name, list(preset[name]))
        if self.augment.augment_domain is None:
            self.augment.augment_domain = preset["augment_domain"]

    def stages_to_run(self) -> list[str]:
        """Stages up to --to-stage."""
        last = STAGES.index(self.run.to_stage) if self.run.to_stage else len(STAGES) - 1
        return list(STAGES[: last + 1])

    def forced(self, stage: str) -> bool:
        """Whether --from-stage forces ``stage`` to recompute despite finished outputs."""
        return self.run.from_stage is not None and STAGES.index(stage) >= STAGES.index(
            self.run.from_stage
        )


def leaf_fields() -> dict[str, tuple[str, Any]]:
    """Map every leaf field name to (section, pydantic FieldInfo)."""
    leaves: dict[str, tuple[str, Any]] = {}
    for section, info in Config.model_fields.items():
        section_model = info.annotation
        for name, field in section_model.model_fields.items():  # type: ignore[union-attr]
            if name in leaves:
                raise RuntimeError(f"configuration field {name!r} is not unique")
            leaves[name] = (section, field)
    return leaves


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML, YAML or JSON configuration file into nested sections."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:] or 'YAML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections")
    return data


def build_config(file_values: dict[str, Any] | None = None, **overrides: Any) -> Config:
    """Merge file values and flat ``overrides`` (leaf name -> value) into a Config.

    Raises ConfigError with a one-line message naming the offending field.
    """
    nested: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (file_values or {}).items()
                                          if isinstance(v, dict)}
    unknown_sections = set(file_values or {}) - set(Config.model_fields)
    if unknown_sections:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown_sections))}")
    leaves = leaf_fields()
    for name, value in overrides.items():
        if value is None:
            continue
        if name not in leaves:
            raise ConfigError(f"unknown configuration field {name!r}")
        nested.setdefault(leaves[name][0], {})[name] = value
    try:
        return Config.model_validate(nested)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field: message (got value)``."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        got = f" (got {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        parts.append(f"{where}: {err['msg']}{got}")
    return "invalid configuration: " + "; ".join(parts)


# --------------------------------------------------------------------------- genreflow predict

DEFAULT_OUT = "predictions.parquet"
WORK_SUFFIX = ".parts"  # predictions.parquet -> predictions.parts/: the shards of its runs
# Up to this many files (and no table asked for) are predicted in this process. A flow on Dask costs
# about 20 s before its first file (temporary Prefect API, cluster, TensorFlow in each worker); this
# process predicts a 30 s track in about 0.1 s, so below a few dozen files the flow cannot win.
LOCAL_MAX_FILES = 32


class PredictOptions(BaseModel):
    """How a table run of ``genreflow predict`` goes: also the Prefect flow's parameter (small: the inputs as
    given, not the files). Here, not in the flow's module, so that the CLI names it without importing Prefect."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[str]
    model_dir: str
    out: str = DEFAULT_OUT
    work: str | None = Field(None, description="work root of the shards; default <out>.parts")
    top_k: int = Field(3, ge=1, le=1000)
    windows: bool = False
    shard_size: int = Field(50, ge=1, le=100_000)
    workers: Workers = 2
    dask_address: DaskAddress = None
    retries: Retries = 2
    local_max: int = Field(LOCAL_MAX_FILES, ge=0)

    @property
    def work_root(self) -> str:
        """The work root as an absolute URL: Dask workers resolve it, each from its own working folder."""
        from genreflow.storage.root import DataRoot

        return DataRoot(self.work or default_work(self.out)).url


def default_work(out: str) -> str:
    """``<out without .parquet>.parts``, beside the table: where its runs' shards live."""
    stem = out[: -len(".parquet")] if out.endswith(".parquet") else out
    return stem + WORK_SUFFIX
