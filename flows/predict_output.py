"""What ``genreflow predict`` prints for a handful of files: a table, CSV or JSON of each file's top genres.

The CLI's side of the quick path (flows/predict.py quick_predict); a module of
its own because its results' types come with TensorFlow (model/predict.py),
which the CLI module does not import until it predicts.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import pandas as pd
from rich.console import Console
from rich.table import Table

from genreflow.model.params import PREDICT_TOP_K
from genreflow.model.predict import FilePrediction, PredictError, PredictionFailure

OutputFormat = Literal["table", "csv", "json"]
FORMATS: tuple[str, ...] = ("table", "csv", "json")


def _ranks(results: list[FilePrediction | PredictionFailure]) -> int:
    """Genre columns to print: as many as a file was given (``--top-k``), at least one."""
    return max([len(r.genres) for r in results if isinstance(r, FilePrediction)] or [PREDICT_TOP_K])


def _csv(results: list[FilePrediction | PredictionFailure]) -> str:
    ranks = _ranks(results)
    header = ["path", "genre"]
    for k in range(1, ranks + 1):
        header += [f"genre_{k}", f"prob_{k}"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*header, "novelty", "error"])
    for result in results:
        row: list[str] = [str(result.path), result.decision if isinstance(result, FilePrediction) else ""]
        ranked = result.genres if isinstance(result, FilePrediction) else []
        for k in range(ranks):
            row += [ranked[k][0], f"{ranked[k][1]:.6f}"] if k < len(ranked) else ["", ""]
        row.append(_novelty(result))
        row.append(result.reason if isinstance(result, PredictionFailure) else "")
        writer.writerow(row)
    return buffer.getvalue()


def _novelty(result: FilePrediction | PredictionFailure) -> str:
    """A file's novelty as the CSV prints it: "" for a failure or a model without a novelty reference."""
    novelty = result.novelty if isinstance(result, FilePrediction) else float("nan")
    return f"{novelty:.6f}" if novelty == novelty else ""


def _json(results: list[FilePrediction | PredictionFailure]) -> str:
    items = []
    for result in results:
        if isinstance(result, FilePrediction):
            items.append(
                {
                    "path": str(result.path),
                    "genre": result.decision,
                    "genres": [{"genre": g, "prob": round(p, 6)} for g, p in result.genres],
                    "n_windows": result.n_windows,
                    "novelty": round(result.novelty, 6) if result.novelty == result.novelty else None,
                }
            )
        else:
            items.append({"path": str(result.path), "error": result.reason})
    return json.dumps(items, indent=2)


def _table(results: list[FilePrediction | PredictionFailure]) -> str:
    ranks = _ranks(results)
    table = Table(title="Predicted genres")
    table.add_column("file", overflow="fold")
    table.add_column("genre")
    for k in range(1, ranks + 1):
        table.add_column(f"top-{k}")
    for result in results:
        if isinstance(result, FilePrediction):
            cells = [f"{g} ({p:.2f})" for g, p in result.genres]
            table.add_row(str(result.path), result.decision, *cells, *[""] * (ranks - len(cells)))
        else:
            table.add_row(str(result.path), "", f"[red]error: {result.reason}[/red]", *[""] * (ranks - 1))
    width = int(os.environ.get("COLUMNS", "120"))
    console = Console(file=io.StringIO(), width=width, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def format_predictions(results: Iterable[FilePrediction | PredictionFailure], fmt: OutputFormat = "table") -> str:
    """Predictions as a rich table (text), CSV (path,genre,genre_1,prob_1,...,novelty,error) or a JSON list;
    ``genre`` is the open-set decision (the top genre or ``unknown``), ``novelty`` model/open_set.py's."""
    results = list(results)
    if fmt == "table":
        return _table(results)
    if fmt == "csv":
        return _csv(results)
    if fmt == "json":
        return _json(results)
    raise PredictError(f"unknown output format {fmt!r}: use one of {', '.join(FORMATS)}")


def table_results(table: pd.DataFrame) -> list[FilePrediction | PredictionFailure]:
    """A predictions table's rows (genre_k/prob_k columns) as the quick path's results, to print them alike."""
    ranks = sorted(int(c.split("_")[1]) for c in table.columns if c.startswith("genre_") and c[6:].isdigit())
    results: list[FilePrediction | PredictionFailure] = []
    for row in table.itertuples(index=False):
        record = row._asdict()
        if record.get("error"):
            results.append(PredictionFailure(Path(record["path"]), str(record["error"])))
            continue
        genres = [(str(record[f"genre_{k}"]), float(record[f"prob_{k}"])) for k in ranks if record[f"genre_{k}"]]
        decision = record.get("genre")
        novelty = record.get("novelty")
        results.append(FilePrediction(Path(record["path"]), genres, int(record.get("n_windows") or 0),
                                      str(decision) if isinstance(decision, str) and decision else None,
                                      float(novelty) if novelty is not None else float("nan")))
    return results
