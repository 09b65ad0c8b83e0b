"""The choice among the trained model families: the best on the validation split is the one promoted.

The test split stays out of the choice (it is what the report and the
promotion gate measure the chosen model on). Each candidate is scored on the
validation tracks by the evaluation's own code (tasks/evaluate.py): track
accuracy first, and where it ties, as it often does on the few validation
tracks of a small collection, the clips' log-loss (how much probability the
model gives each clip's genre), a continuous score that rarely ties and
rewards the model that is right with confidence. The MFCC + SVM baseline is
shown beside them but never chosen: it is a reference, not a model that
predict and export can use.
"""

from __future__ import annotations

from typing import Any

FAMILY_NAMES: dict[str, str] = {"cnn": "CNN", "embedding": "musicnn embedding + logistic regression"}
# Exact ties on validation (accuracy and log-loss) go to the first family here: the CNN is the project's reference.
FAMILY_ORDER: tuple[str, ...] = ("cnn", "embedding")


def _validation(metrics: dict[str, Any] | None, key: str) -> float | None:
    value = ((metrics or {}).get("validation") or {}).get(key)
    return None if value is None else float(value)


def _loss(row: dict[str, Any]) -> float:
    return float("inf") if row["val_log_loss"] is None else row["val_log_loss"]


def candidate_rows(scored: dict[str, dict[str, Any]], runs: dict[str, str], baseline: dict[str, Any] | None
                   ) -> list[dict[str, Any]]:
    """One row a candidate: its validation and test scores, whether it can be promoted."""
    rows = []
    for family in sorted(scored, key=FAMILY_ORDER.index):
        metrics = scored[family]
        rows.append({"family": family, "name": FAMILY_NAMES[family], "run": runs[family], "promotable": True,
                     "val_track_accuracy": _validation(metrics, "track_accuracy"),
                     "val_macro_f1": _validation(metrics, "macro_f1"), "val_log_loss": _validation(metrics, "log_loss"),
                     **{f"test_{key}": metrics.get(key) for key in ("track_accuracy", "macro_f1", "clip_accuracy")}})
    if baseline is not None:
        rows.append({"family": "baseline", "name": str(baseline.get("name", "baseline")), "run": None,
                     "promotable": False, "val_track_accuracy": baseline.get("val_track_accuracy"),
                     "val_macro_f1": None, "val_log_loss": None,
                     **{f"test_{key}": baseline.get(key) for key in ("track_accuracy", "macro_f1", "clip_accuracy")}})
    return rows


def choose_model(scored: dict[str, dict[str, Any]], runs: dict[str, str], baseline: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The family to promote (best validation track accuracy, then lowest validation log-loss, then
    FAMILY_ORDER), its run, why, and every candidate's row (:func:`candidate_rows`), the chosen one marked."""
    if not scored:
        raise ValueError("no trained model to choose from")
    rows = candidate_rows(scored, runs, baseline)
    promotable = [row for row in rows if row["promotable"]]
    scorable = [row for row in promotable if row["val_track_accuracy"] is not None]
    if not scorable:
        best = promotable[0]
        reason = "no validation tracks to compare on" if len(promotable) > 1 else "the only model trained"
    else:
        best = max(scorable, key=lambda row: (row["val_track_accuracy"], -_loss(row),
                                              -FAMILY_ORDER.index(row["family"])))
        others = [row for row in scorable if row is not best]
        tied = [row for row in others if row["val_track_accuracy"] == best["val_track_accuracy"]]
        if tied:
            reason = (f"validation track accuracy tied at {best['val_track_accuracy']:.3f}; lower validation "
                      f"log-loss: {_loss(best):.3f} against " + ", ".join(
                          f"{row['name']} {_loss(row):.3f}" for row in tied))
        elif others:
            reason = (f"best validation track accuracy: {best['val_track_accuracy']:.3f} against " + ", ".join(
                f"{row['name']} {row['val_track_accuracy']:.3f}" for row in others))
        else:
            reason = f"the only model trained (validation track accuracy {best['val_track_accuracy']:.3f})"
        reference = next((row for row in rows if not row["promotable"]), None)
        if reference and reference["val_track_accuracy"] is not None and \
                reference["val_track_accuracy"] > best["val_track_accuracy"]:
            reason += (f"; the {reference['name']} baseline scored {reference['val_track_accuracy']:.3f} but is a "
                       "reference only, not a model predict and export can use")
    for row in rows:
        row["chosen"] = row is best
    return {"chosen": best["family"], "run": best["run"], "reason": reason, "candidates": rows}
