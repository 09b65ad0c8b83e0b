"""The one typed configuration that every flow, task and CLI flag maps onto.

Defaults are the seed project's values. Every leaf field has a unique name, so
the CLI can offer each one as ``--field-name`` without ambiguity. Importing it
costs no TensorFlow, Prefect nor scikit-learn: ``genreflow --help`` reads it
(tests/flows/test_cli_imports.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

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
    mlflow_uri: str | None = Field(None, description="also log each rebuild and cross-validation fold to this MLflow "
                                                     "tracking URI, e.g. sqlite:///mlflow.db; needs pip install "
                                                     "'genreflow[mlflow]' (default: off)")
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


def build_config(file_values: dict[str, Any] | None = None, _explicit: dict[str, Any] | None = None,
                 **overrides: Any) -> Config:
    """Merge file values and flat ``overrides`` (leaf name -> value; None there means "not given") into a
    Config; ``_explicit`` values are given even when None (``--clips-per-track all``).

    Raises ConfigError with a one-line message naming the offending field.
    """
    nested: dict[str, dict[str, Any]] = {k: dict(v) for k, v in (file_values or {}).items()
                                          if isinstance(v, dict)}
    unknown_sections = set(file_values or {}) - set(Config.model_fields)
    if unknown_sections:
        raise ConfigError(f"unknown config section(s): {', '.join(sorted(unknown_sections))}")
    leaves = leaf_fields()
    given = {RENAMED_FIELDS.get(name, name): value for name, value in overrides.items() if value is not None} | {
        RENAMED_FIELDS.get(name, name): value for name, value in (_explicit or {}).items()}
    for name, value in given.items():
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


# --------------------------------------------------------------------------- where values come from

PROJECT_FILE = "genreflow.toml"
ENV_PREFIX = "GENREFLOW_"
# Where a rebuild records the configuration it ran with, under the data root.
RECORDED_CONFIG = "config.json"
# Fields a data root's recorded configuration does not hand on: they say how one run goes, not what the
# data root holds (a recorded --from-stage would force that stage on every later command).
NOT_RECORDED: tuple[str, ...] = ("data_root", "from_stage", "to_stage", "evaluate_run", "workers", "dask_address",
                                 "retries")
# Fields renamed, by their old names, which config files, recorded configurations, GENREFLOW_<OLD> and --<old>
# still give: rebuild's --model was a family while predict's --model is a run.
RENAMED_FIELDS: dict[str, str] = {"model": "family"}
# Fields that hold a local path, resolved against the project file's folder when relative there.
PATH_FIELDS: tuple[str, ...] = ("data_root", "input", "audio", "weights_dir")
# The sources of values, highest precedence first (docs: configuration reference).
Origin = Literal["flag", "environment", "project file", "data root", "default"]
ORIGINS: tuple[Origin, ...] = ("flag", "environment", "project file", "data root")
ON_WORDS, OFF_WORDS = ("on", "yes", "true", "1"), ("off", "no", "false", "0")


def none_word(field: Any) -> str | None:
    """The word that types None for an optional number (``all`` clips, ``off`` folds), where it means one."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    return extra.get("none_word")


def parse_value(name: str, text: str) -> Any:
    """A leaf field's value from its text, as a flag or an environment variable gives it.

    Raises ValueError with what was expected; a typed None word (``all``, ``off``) is a value, never
    "not given".
    """
    field = leaf_fields()[name][1]
    return _parse_typed(field.annotation, text, none_word(field))


def _parse_typed(annotation: Any, text: str, none: str | None) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        if none is not None and text.strip().lower() == none:
            return None
        inner = next(a for a in args if a is not type(None))
        try:
            return _parse_typed(inner, text, None)
        except ValueError as exc:
            raise ValueError(f"{exc}{f' or {none}' if none else ''}") from None
    if annotation is bool:
        word = text.strip().lower()
        if word not in ON_WORDS + OFF_WORDS:
            raise ValueError(f"expected on or off, got {text!r}")
        return word in ON_WORDS
    if origin is typing.Literal:
        if text not in args:
            raise ValueError(f"expected one of {', '.join(map(str, args))}, got {text!r}")
        return text
    if origin is list:
        return [_parse_typed(args[0], part, None) for part in text.replace(",", " ").split()]
    if annotation in (int, float):
        try:
            return annotation(text)
        except ValueError:
            raise ValueError(f"invalid {annotation.__name__} value: {text!r}") from None
    return text


def find_project_file(start: Path) -> Path | None:
    """``genreflow.toml`` in ``start`` or the nearest folder above it, as git, DVC and Kedro find theirs."""
    for folder in (start, *start.parents):
        candidate = folder / PROJECT_FILE
        if candidate.is_file():
            return candidate
    return None


def file_leaf_values(path: Path) -> dict[str, Any]:
    """A configuration file's values as leaf name -> value; relative paths resolved against its folder."""
    leaves = leaf_fields()
    values: dict[str, Any] = {}
    for section, entries in load_config_file(path).items():
        if section not in Config.model_fields:
            raise ConfigError(f"{path}: unknown config section [{section}]; known: {', '.join(Config.model_fields)}")
        if not isinstance(entries, dict):
            raise ConfigError(f"{path}: [{section}] must hold fields, got {entries!r}")
        for name, value in entries.items():
            name = RENAMED_FIELDS.get(name, name)
            if leaves.get(name, ("",))[0] != section:
                raise ConfigError(f"{path}: unknown field {section}.{name}")
            if name in PATH_FIELDS and isinstance(value, str) and value and "://" not in value:
                value = str((path.parent / value).resolve()) if not Path(value).is_absolute() else value
            values[name] = value
    return values


def environment_values(environ: typing.Mapping[str, str]) -> dict[str, Any]:
    """``GENREFLOW_<FIELD>`` variables as leaf values; a value that does not parse names its variable."""
    values: dict[str, Any] = {}
    old_names = {new: old for old, new in RENAMED_FIELDS.items()}
    for name in leaf_fields():
        variable = next((ENV_PREFIX + n.upper() for n in (name, old_names.get(name)) if n and
                         ENV_PREFIX + n.upper() in environ), None)
        if variable is not None:
            try:
                values[name] = parse_value(name, environ[variable])
            except ValueError as exc:
                raise ConfigError(f"${variable}: {exc}") from None
    return values


def recorded_values(data_root: str) -> dict[str, Any]:
    """The values the data root's last rebuild was given (its recorded configuration), less NOT_RECORDED."""
    from genreflow.storage.root import DataRoot

    root = DataRoot(data_root)
    path = root.join(RECORDED_CONFIG)
    if not root.exists(path):
        return {}
    try:
        given = dict(root.read_json(path)["given"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a configuration genreflow recorded ({exc}); delete it to go on") from None
    leaves = leaf_fields()
    given = {RENAMED_FIELDS.get(name, name): value for name, value in given.items()}
    return {name: value for name, value in given.items() if name in leaves and name not in NOT_RECORDED}


def record_config(config: Config, given: dict[str, Any], command: str) -> None:
    """Write what a rebuild was given and the configuration it resolved to into its data root, atomically."""
    from genreflow.storage.root import DataRoot

    root = DataRoot(config.run.data_root)
    root.write_json(root.join(RECORDED_CONFIG), {
        "command": command, "given": {name: given[name] for name in sorted(given)},
        "config": config.model_dump(mode="json")})


def non_default_values(config: Config) -> dict[str, Any]:
    """The leaf values of ``config`` that differ from a default Config's: what a scheduled run was given, as
    near as its Config alone tells."""
    default = _leaf_values(Config())
    return {name: value for name, value in _leaf_values(config).items() if default[name] != value}


def _leaf_values(config: Config) -> dict[str, Any]:
    return {name: value for section in config.model_dump(mode="json").values() for name, value in section.items()}


# What a data root's collection is: a rebuild that changes one of these by default alone is refused.
COLLECTION_FIELDS: tuple[str, ...] = ("source", "input")


def check_collection_kept(sources: ConfigSources, config: Config) -> None:
    """Refuse a rebuild or preprocess that would swap the data root's collection for the default one.

    Rebuild and preprocess do not start from the recorded configuration (they are what records it), so
    ``genreflow rebuild --data-root ROOT`` with no ``--source`` would ingest the default demo set into a root
    built from a folder or FMA, and its next run would drop every track it held. Where the collection's
    fields all come from the defaults and differ from what the root recorded, ConfigError says what to
    repeat; a flag, variable or project-file value for any of them is taken as meant.
    """
    data_root = config.run.data_root
    recorded = recorded_values(data_root)
    resolved = config.source.model_dump(mode="json")
    named = any(sources.origin(name) != "default" for name in COLLECTION_FIELDS)
    changed = [name for name in COLLECTION_FIELDS if name in recorded and resolved.get(name) != recorded[name]]
    if changed and not named:
        was = " ".join(f"--{name} {recorded[name]}" for name in COLLECTION_FIELDS if recorded.get(name) is not None)
        raise ConfigError(f"{data_root} holds the collection of `{was}` (its recorded configuration), and this "
                          f"run was given no --{' or --'.join(COLLECTION_FIELDS)}: it would replace that collection "
                          f"with the default one. Repeat `{was}`, or give the new collection's --source to replace it")


def data_root_of(flag: str | None) -> str:
    """A command's data root when it takes no other setting (predict, export, promote): its flag, else
    $GENREFLOW_DATA_ROOT or the project file's, else the default."""
    return flag if flag is not None else config_sources({}).config().run.data_root


@dataclasses.dataclass(frozen=True)
class ConfigSources:
    """The values each source gave, leaf name -> value: how a command's configuration came about.

    Precedence, highest first: a flag, then ``GENREFLOW_<FIELD>``, then the project file (``--config`` or the
    nearest ``genreflow.toml``), then the data root's recorded configuration, then the default.
    """

    flags: dict[str, Any] = dataclasses.field(default_factory=dict)
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)
    project: dict[str, Any] = dataclasses.field(default_factory=dict)
    recorded: dict[str, Any] = dataclasses.field(default_factory=dict)
    project_file: Path | None = None

    def by_origin(self) -> dict[Origin, dict[str, Any]]:
        return dict(zip(ORIGINS, (self.flags, self.environment, self.project, self.recorded), strict=True))

    def given(self) -> dict[str, Any]:
        """Every value given, each from its highest source."""
        merged: dict[str, Any] = {}
        for values in reversed(self.by_origin().values()):
            merged.update(values)
        return merged

    def origin(self, name: str) -> Origin:
        return next((origin for origin, values in self.by_origin().items() if name in values), "default")

    def overridden_record(self) -> list[str]:
        """One line per recorded value that a higher source changes: the user is told, not surprised."""
        lines, given = [], self.given()
        for name, value in self.recorded.items():
            origin = self.origin(name)
            if origin != "data root" and given[name] != value:
                lines.append(f"{_source_name(origin, name, self.project_file)} {given[name]!r} overrides "
                             f"the data root's recorded {name} {value!r}")
        return lines

    def config(self) -> Config:
        return build_config(None, _explicit=self.given())


def _source_name(origin: Origin, name: str, project_file: Path | None) -> str:
    return {"flag": f"--{name.replace('_', '-')}", "environment": f"${ENV_PREFIX}{name.upper()}",
            "project file": f"{project_file} {name}"}.get(origin, name)


def config_sources(flags: dict[str, Any], *, config_file: Path | None = None,
                   environ: typing.Mapping[str, str] | None = None, cwd: Path | None = None,
                   read_recorded: bool = False) -> ConfigSources:
    """Gather every source of a command's configuration (see :class:`ConfigSources`).

    ``read_recorded``: commands that work on what a rebuild made (status, train, evaluate, predict, runs)
    start from the data root's recorded configuration; rebuild and preprocess are what record it.
    """
    environment = environment_values(os.environ if environ is None else environ)
    project_file = config_file or find_project_file(cwd or Path.cwd())
    project = file_leaf_values(project_file) if project_file else {}
    sources = ConfigSources(dict(flags), environment, project, {}, project_file)
    if read_recorded:
        data_root = sources.given().get("data_root", RunConfig.model_fields["data_root"].default)
        sources = dataclasses.replace(sources, recorded=recorded_values(data_root))
    return sources


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
    min_confidence: float | None = Field(
        None, ge=0, le=1, description="a file whose top probability is under P is `unknown`: its genre column "
                                      "says so and `tag` writes nothing for it (default: the threshold chosen on "
                                      "validation and saved with the model, see its report's Open set section; a "
                                      "model saved without one gives no unknown)")
    max_novelty: float | None = Field(
        None, gt=0, description="a file whose novelty is over R is `unknown` too: its pooled representation is "
                                "that much farther from the training tracks than the validation tracks' cut "
                                "(default 1.0, the cut saved with the model, which keeps 95 in 100 validation "
                                "tracks; a larger R says unknown less often; a model saved without a novelty "
                                "reference gives no novelty)")
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
