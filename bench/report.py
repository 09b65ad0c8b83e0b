"""The targets of issues 5, 12, 13, 15 and 24, the pass/miss verdicts, the printed table and the JSON document."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Target:
    """A ratio's goal: ``value op bound`` passes (op is ">=" or "<=")."""

    op: str
    bound: float
    what: str

    def passes(self, value: float | None) -> bool | None:
        if value is None or not math.isfinite(value):
            return None
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


TARGETS: dict[str, Target] = {
    "preprocess_vs_seed": Target(">=", 1.8, "seed's sequential loop time / genreflow decode+mel on 2 workers"),
    "preprocess_vs_floor": Target("<=", 1.3, "genreflow decode+mel per core / the floor's minimal loop"),
    "orchestration_overhead": Target("<=", 1.10, "flow through Prefect+Dask / same task functions in a 2-process pool"),
    "noop_rerun_fraction": Target("<=", 0.05, "rerun with every output materialised / the full preprocessing run"),
    "train_input_vs_memory": Target(">=", 0.90, "samples/s fed by clip_dataset from shards / from a numpy array"),
    "train_rss_growth": Target("<=", 1.20, "peak RSS of training on a 4x larger set / on the base set"),
    "predict_per_track_s": Target("<=", 0.5, "seconds to classify one 30 s mp3, model loaded"),
    "worker_scaling": Target(">=", 1.8, "preprocessing on 1 worker / on 2 workers"),
    "incremental_rebuild_fraction": Target("<=", 0.15, "rebuild after 5 % new tracks / full preprocessing of them all"),
    # issue 13: the whole of preprocessing, augmentation included
    "full_preprocess_vs_seed": Target(">=", 10.0, "seed's loop with its 4 augmentations / genreflow decode+mel+"
                                      "4 spectral copies on 2 workers, same clips"),
    "augment_copy_vs_mel": Target("<=", 0.5, "one spectral augmented copy / one clip's mel, one core"),
    # issue 15
    "library_predict_vs_model": Target(">=", 0.8, "files/s of `predict` over a library on 2 workers / "
                                       "the model's own rate on the same windows, decoded"),
    # issue 24
    "library_incremental_fraction": Target("<=", 0.10, "`predict` again after 5 % new files / a cold run of "
                                           "the grown library, same warm cluster"),
}
RATIO_NAMES: tuple[str, ...] = tuple(TARGETS)


def verdicts(ratios: dict[str, float | None]) -> dict[str, str]:
    """pass, miss or n/a for each ratio of TARGETS."""
    out = {}
    for name, target in TARGETS.items():
        ok = target.passes(ratios.get(name))
        out[name] = "n/a" if ok is None else ("pass" if ok else "miss")
    return out


def format_table(ratios: dict[str, float | None]) -> str:
    """A plain-text table: name, value, target, pass/miss."""
    rows = [("name", "value", "target", "result")]
    marks = verdicts(ratios)
    for name, target in TARGETS.items():
        value = ratios.get(name)
        shown = "-" if value is None or not math.isfinite(value) else f"{value:.3f}"
        rows.append((name, shown, str(target), marks[name]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def document(ratios: dict[str, float | None], figures: dict[str, Any], machine: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: every ratio name present (null when not measured), figures, machine."""
    return {"ratios": {name: ratios.get(name) for name in RATIO_NAMES}, "figures": figures, "machine": machine,
            "verdicts": verdicts(ratios)}


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(json.dumps(doc, indent=2, sort_keys=False, default=_plain) + "\n")


def _plain(value: Any) -> Any:
    """numpy scalars and paths as JSON values."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
