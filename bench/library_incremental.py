"""``library_incremental_fraction``: ``genreflow predict`` again after 5 % new files, against a cold run of them all.

Both sides run the library flow (flows/predict_flow.py) as ``genreflow
predict LIBRARY --out ...`` does, on the same warm 2-worker Dask cluster
(processes up, TensorFlow imported), with the default recipe's CNN, in
interleaved rounds:

- incremental: a work root that already holds the predictions of 95 % of the
  library (the run before, untimed); the other 5 % of the files appear in the
  same folders and the flow runs again: only they are predicted, the table of
  the whole library is written;
- cold: a fresh work root, the grown library: every file predicted.

The model load, its first trace and every bucket and table write are inside
both timed runs, as a user's nightly run pays them; the temporary Prefect API is
outside, as for every ratio. Target: incremental / cold <= 0.10 (issue 24).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genreflow.bench import inputs, preprocess, timing
from genreflow.bench.incremental import link_or_copy, split_collection
from genreflow.bench.library_predict import SHARD_SIZE, child
from genreflow.flows.predict_options import LibraryOptions

if TYPE_CHECKING:
    from genreflow.tasks.predict import PredictSummary


def _warm_predict_worker() -> int:
    """Import what a predict task imports, TensorFlow included, so no timed run pays the process start."""
    from genreflow.model.quiet_tf import tf  # noqa: F401
    from genreflow.tasks.predict import predict_shard_task  # noqa: F401

    return os.getpid()


def _run(library: Path, model: Path, out: Path, address: str | None) -> PredictSummary:
    from genreflow.flows.predict_flow import run_library_predict

    options = LibraryOptions(inputs=[str(library)], model_dir=str(model), out=str(out), shard_size=SHARD_SIZE,
                             workers=2, dask_address=address, retries=0, local_max=0)
    with preprocess.quiet_stderr(), contextlib.redirect_stdout(io.StringIO()):
        return run_library_predict(options)


def measure(base: inputs.BenchSet, files: int, rounds: int, workdir: Path, log: Callable[[str], None],
            model: Path | None = None) -> tuple[dict[str, float | None], dict[str, Any]]:
    """Interleaved rounds of the incremental and the cold side on a warm 2-worker cluster; the ratio and
    its figures. Call with the temporary Prefect API already up."""
    copies = -(-files // len(base))
    source = inputs.replicate_set(base, workdir / "library-src", copies)
    collection = inputs.BenchSet(source.root, tuple(sorted(source.paths)[:files]))
    old, new = split_collection(collection)
    if model is None:
        genres = sorted({p.parent.name for p in base.paths})
        model = Path(child("make_model", {"folder": str(workdir / "model" / "run-bench"), "genres": genres})["folder"])
    warm = preprocess.WarmCluster(2, base.paths[0])
    warm.client.run(_warm_predict_worker)
    recorder = timing.Recorder()
    computed: dict[str, list[int]] = {"incremental": [], "cold": []}
    try:
        for r in range(rounds):
            library = workdir / f"library-{r}"
            shutil.rmtree(library, ignore_errors=True)
            for path in old:
                link_or_copy(path, library / path.parent.name / path.name)
            kept = preprocess.fresh_root(workdir / "roots", "incremental") / "predictions.parquet"
            _run(library, model, kept, warm.address)  # last night's run: not timed
            for path in new:
                link_or_copy(path, library / path.parent.name / path.name)
            cold = preprocess.fresh_root(workdir / "roots", "cold") / "predictions.parquet"
            for side, out in (("incremental", kept), ("cold", cold)):
                summary = recorder.time(side, lambda out=out, library=library: _run(library, model, out, warm.address))
                computed[side].append(summary.computed)
            shutil.rmtree(kept.parent, ignore_errors=True)
            shutil.rmtree(cold.parent, ignore_errors=True)
            shutil.rmtree(library, ignore_errors=True)
            log(f"library incremental round {r + 1}/{rounds}: {len(new)} new of {len(collection)} files in "
                f"{recorder.times['incremental'][-1]:.1f} s ({computed['incremental'][-1]} predicted), cold "
                f"{recorder.times['cold'][-1]:.1f} s ({computed['cold'][-1]} predicted)")
    finally:
        warm.close()
    best = {side: recorder.timing(side).best for side in ("incremental", "cold")}
    figures = {"files": len(collection), "new_files": len(new), "shard_size": SHARD_SIZE, "model": model.name,
               "predicted": computed, "timings": {side: recorder.timing(side).as_dict() for side in best}}
    return {"library_incremental_fraction": best["incremental"] / best["cold"]}, figures
