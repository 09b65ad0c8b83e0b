"""``genreflow tag``: the predicted genre into each file's own tag, a dry run unless ``--apply``.

The command line's side; the tag writing itself is tasks/tags.py (plain file
I/O with mutagen). The predictions come from a table (``--predictions TABLE``,
Parquet or the CSV of ``predict --out x.csv``) or from a table run of
``genreflow predict`` over LIBRARY, which keeps up with the library as predict
does (only new and changed files are predicted). Journals go into the work
folder of that table (``--work``, by default beside it), one a run; ``--undo
JOURNAL`` puts the old values back.

Like flows/predict.py, this module imports Prefect and TensorFlow only when a
run predicts.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from genreflow.flows.config import DEFAULT_OUT, LOCAL_MAX_FILES, ConfigError, data_root_of, default_work
from genreflow.flows.predict_options import add_cluster_arguments, add_open_set_arguments

if TYPE_CHECKING:
    import pandas as pd

MAX_LINES = 50  # per-file lines a run prints; the counts cover all


def add_tag_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``genreflow tag``."""
    parser.add_argument("paths", nargs="*", type=Path, metavar="LIBRARY",
                        help="audio files, folders (searched recursively) or CSV files with a 'path' column")
    parser.add_argument("--predictions", default=None, metavar="TABLE",
                        help="take the genres from this table (predict's --out, Parquet or CSV) instead of "
                             "predicting LIBRARY")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", dest="apply", action="store_false",
                      help="list what would change and write nothing (the default)")
    mode.add_argument("--apply", dest="apply", action="store_true", help="write the tags, journalled first")
    mode.add_argument("--undo", default=None, metavar="JOURNAL", help="restore the old values a journal records")
    parser.add_argument("--overwrite", action="store_true", help="replace a genre a file already has")
    add_open_set_arguments(parser)  # predict's: one concept, one name each
    parser.add_argument("--list-all", action="store_true", help="list every file, the ones that keep their genre too")
    predict = parser.add_argument_group("predicting LIBRARY (as genreflow predict)")
    predict.add_argument("--model", type=Path, help="model folder, its model.keras, or a run name (default: the "
                                                     "data root's promoted model)")
    predict.add_argument("--data-root", default=None,
                         help="where to find the promoted model (default: $GENREFLOW_DATA_ROOT, the project file's, "
                              "or genreflow-data)")
    predict.add_argument("--out", default=None, metavar="PATH",
                         help=f"the predictions table kept for the next run (default: {DEFAULT_OUT})")
    predict.add_argument("--work", default=None, metavar="DIR",
                         help="the work folder: buckets for the next run, and the tag journals")
    predict.add_argument("--content-hash", action="store_true", help="as predict --content-hash")
    add_cluster_arguments(predict)
    predict.add_argument("--local-max", type=int, default=LOCAL_MAX_FILES, metavar="N",
                         help=f"up to N files predicted in this process (default: {LOCAL_MAX_FILES})")
    parser.set_defaults(apply=False, windows=False, top_k=3, retries=None, retry_failed=False, playlists=None)


def tag_command(args: argparse.Namespace) -> int:
    """Run ``genreflow tag``: undo a journal, or plan (and with --apply write) each file's genre tag."""
    from genreflow.tasks.tags import apply_tags, new_journal, plan_counts, plan_lines, plan_tags, undo_journal

    if args.undo:
        report = undo_journal(args.undo)
        _keep_predictions(os.path.dirname(os.path.abspath(args.undo)), report.outcomes)
        _print_outcomes(report.outcomes)
        print(f"restored {report.written} file(s) from {args.undo}; the undo's own journal: {report.journal}")
        return 0
    if args.min_confidence is not None and not 0.0 <= args.min_confidence <= 1.0:
        raise ConfigError(f"--min-confidence must be between 0 and 1 (got {args.min_confidence})")
    if not args.paths and not args.predictions:
        raise ConfigError("genreflow tag needs a LIBRARY, a --predictions TABLE, or --undo JOURNAL")
    table, real, work = _predictions(args)
    # A table predicted here was decided with the flags; one given with --predictions is decided again by them.
    redecide = bool(args.predictions) and (args.min_confidence is not None or args.max_novelty is not None)
    rows = _rows(table, real, redecide, args.max_novelty)
    plans = plan_tags(rows, args.min_confidence, args.overwrite)
    counts = plan_counts(plans)
    if not args.apply:
        _print_lines(plan_lines(plans, verbose_keep=args.list_all))
        print(f"tag dry run: {counts['write']} to write, {counts['keep']} kept, {counts['skip']} skipped; "
              "nothing written (--apply writes them)")
        return 0
    journal = new_journal(work)
    report = apply_tags(plans, journal)
    _keep_predictions(work, report.outcomes)
    _print_outcomes([o for o in report.outcomes if not o.done])
    skipped = [p for p in plans if p.action == "skip"]
    _print_lines(plan_lines(skipped))
    failed = len(report.outcomes) - report.written
    print(f"tagged {report.written} file(s), {failed} left as they were, {counts['keep']} kept, "
          f"{counts['skip']} skipped; journal {journal} (undo: genreflow tag --undo {journal})")
    return 1 if failed and not report.written else 0


def _predictions(args: argparse.Namespace) -> tuple[pd.DataFrame, dict[str, str], str]:
    """(the predictions table, table path -> the file's own path, the local work folder for the journal)."""
    from genreflow.storage.files import display_path
    from genreflow.tasks.library import list_library

    if args.predictions:
        table = _read_table(args.predictions)
        work = args.work or default_work(_strip(args.predictions))
        real: dict[str, str] = {}
        if args.paths:  # names that are not UTF-8 show as \xNN in a table: the library maps them back
            real = {display_path(p): p for p in list_library(args.paths).files}
        return table, real, _local(work)
    from genreflow.flows.predict import options_from_args, table_predict
    from genreflow.model.files import resolve_model_dir

    options = options_from_args(args, resolve_model_dir(args.model, data_root_of(args.data_root)))
    listing = list_library(args.paths)
    table_predict(options, listing)
    return _read_table(options.out), {display_path(p): p for p in listing.files}, _local(options.work_root)


def _strip(table: str) -> str:
    for suffix in (".csv", ".parquet"):
        if table.lower().endswith(suffix):
            return table[: -len(suffix)] + ".parquet"
    return table


def _local(work: str) -> str:
    from genreflow.storage.root import DataRoot

    root = DataRoot(work)
    if not root.is_local:
        raise ConfigError(f"--work {work}: tag journals are written on this machine; give a local --work")
    os.makedirs(root.path, exist_ok=True)
    return root.path


def _read_table(path: str) -> pd.DataFrame:
    """A predictions table: predict's Parquet, or its CSV (path, genre, probability, ...)."""
    import pandas as pd

    from genreflow.storage.root import DataRoot

    try:
        if path.lower().endswith(".csv"):
            frame = pd.read_csv(path, dtype={"path": str, "genre": str, "error": str}, keep_default_na=False)
            frame["probability"] = pd.to_numeric(frame["probability"], errors="coerce")
            return frame
        return DataRoot(os.path.dirname(path) or ".").read_parquet(path)
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"--predictions {path}: cannot read it as a predictions table ({exc})") from None


def _rows(table: pd.DataFrame, real: dict[str, str], top: bool = False, max_novelty: float | None = None
          ) -> list[tuple[str, str, str | None, float, str]]:
    """(file path, shown path, genre, probability, error) of each row, for tasks.tags.plan_tags: the table's
    decision (a genre or ``unknown``), or with ``top`` (flags that decide again: plan_tags applies
    ``--min-confidence``) the top genre, ``unknown`` where the file's novelty is over ``max_novelty`` (default
    the saved cut, 1.0, where the table has a novelty column)."""
    import pandas as pd

    from genreflow.model.open_set import OpenSetRule
    from genreflow.tasks.playlists import decided_genre, with_decision

    if "probability" in table.columns and "genre" in table.columns and "genre_1" not in table.columns:  # the CSV
        genre = table["genre"]
        if top and "top3" in table.columns:  # its genre may be unknown; top3 starts with the top genre
            first = table["top3"].astype(str).str.split(";").str[0].str.rsplit(":", n=1).str[0]
            genre = first.where(first != "", genre)
        genres = genre.where(genre.astype(bool) & (table["error"] == ""), None)
        probs = table["probability"]
    else:
        if top:
            cut = max_novelty if max_novelty is not None else 1.0 if "novelty" in table.columns else None
            decided = decided_genre(with_decision(table.drop(columns=["decision"], errors="ignore"),
                                                  OpenSetRule(None, cut)))
        else:
            decided = decided_genre(table)
        genres, probs = decided, table.get("prob_1", pd.Series(float("nan"), index=table.index))
    missing = [c for c in ("path", "error") if c not in table.columns]
    if missing:
        raise ConfigError(f"a predictions table needs the columns path and error; it lacks {', '.join(missing)}")
    return [(real.get(path, path), path, genre, float(prob) if prob == prob else float("nan"), str(error))
            for path, genre, prob, error in zip(table["path"], genres, probs, table["error"], strict=True)]


def _keep_predictions(work: str, outcomes: list) -> None:
    """A tag write changes a file's mtime and size, not its audio: tell the work folder's last run, so that the
    next ``predict`` reuses those files' rows (tasks.predict.adopt_identities)."""
    from genreflow.tasks.predict import adopt_identities

    adopt_identities(work, [o.shown or o.path for o in outcomes if o.done])


def _print_lines(lines: list[str]) -> None:
    for line in lines[:MAX_LINES]:
        print(line)
    if len(lines) > MAX_LINES:
        print(f"... and {len(lines) - MAX_LINES} more")


def _print_outcomes(outcomes: list) -> None:
    from genreflow.storage.files import display_path

    _print_lines([f"{'done' if o.done else 'left as it was'}: {display_path(o.path)}: {o.reason}" for o in outcomes])
