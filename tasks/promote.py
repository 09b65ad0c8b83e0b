"""promote stage: a rebuild's model replaces the promoted one only if it passes the gate.

The gate (``--promote if-better``, the default): the new model's track accuracy
on the current test split is not worse than the promoted model's on the same
tracks, minus ``--promote-tolerance``. The promoted model is re-scored on the
current test split, so that both numbers count the same tracks even after the
collection changed. ``always`` promotes every new model, ``never`` none (they
are kept, and named, for ``genreflow promote RUN``). A promoted model that
cannot be scored on the current test split (it does not know a genre the
collection now has) is replaced: it cannot be compared, and could not classify
that genre. The decision goes to models/registry.json (storage/registry.py) in
one atomic write, and to reports/<run>/promotion.json.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from genreflow.storage.errors import GenreflowError
from genreflow.storage.manifest import output_state, read_manifest
from genreflow.storage.outputs import Output, OutputSpec, manifest_path, open_output
from genreflow.storage.registry import Decision, Policy, PromotionRecord, read_registry, record_decision
from genreflow.storage.root import DataRoot, StorageError
from genreflow.tasks.evaluate import score_model

PROMOTION_SUFFIX = ".json"  # the output's path plus this: reports/<run>/promotion.json
COMPARED = ("track_accuracy", "clip_accuracy", "macro_f1", "top2_accuracy")  # shown side by side in the report


class PromotionError(GenreflowError, ValueError):
    """A run that cannot be promoted: it does not exist or did not finish."""


def gate(policy: Policy, tolerance: float, candidate: float, promoted: float | None) -> tuple[Decision, str]:
    """The decision on a candidate of track accuracy ``candidate`` against the promoted model's (None: none to
    compare with), and its reason."""
    if policy == "never":
        return "rejected", "--promote never"
    if promoted is None:
        return "promoted", "no model could be compared on the current test split"
    if policy == "always":
        return "promoted", f"--promote always (track accuracy {candidate:.3f} against {promoted:.3f})"
    if candidate >= promoted - tolerance:
        return "promoted", (f"track accuracy {candidate:.3f} is not worse than the promoted model's {promoted:.3f} "
                            f"on the same tracks, less the tolerance {tolerance:g}")
    return "rejected", (f"track accuracy {candidate:.3f} is worse than the promoted model's {promoted:.3f} on the "
                        f"same tracks by more than the tolerance {tolerance:g}")


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    return {key: metrics.get(key) for key in (*COMPARED, "n_tracks")}


def decide(root: DataRoot, candidate: str, candidate_metrics: dict[str, Any], test_shards: list[str],
           policy: Policy, tolerance: float, test_set: str | None) -> dict[str, Any]:
    """Compare ``candidate`` with the promoted run on the current test split, record the decision; its summary."""
    registry = read_registry(root)
    previous = registry.promoted
    summary: dict[str, Any] = {"run": candidate, "policy": policy, "tolerance": tolerance, "test_set": test_set,
                               "previous": previous, "run_metrics": _summary(candidate_metrics),
                               "previous_metrics": None}
    if previous == candidate:
        decision: Decision = "kept"
        reason = "it is the promoted model already"
    else:
        promoted_accuracy = None
        if previous is not None and policy != "never":
            try:
                _, rescored = score_model(root, previous, test_shards)
            except (ValueError, OSError) as exc:  # a genre it does not know, or a model gone from the data root
                summary["previous_error"] = str(exc)
            else:
                summary["previous_metrics"] = _summary(rescored)
                promoted_accuracy = float(rescored["track_accuracy"])
        decision, reason = gate(policy, tolerance, float(candidate_metrics["track_accuracy"]), promoted_accuracy)
        if previous is not None and promoted_accuracy is None and policy != "never":
            reason += f" ({previous}: {summary.get('previous_error', 'not scored')})"
        record_decision(root, PromotionRecord(
            run=candidate, decision=decision, reason=reason, policy=policy, previous=previous,
            run_track_accuracy=float(candidate_metrics["track_accuracy"]),
            previous_track_accuracy=promoted_accuracy, test_set=test_set))
    summary.update(decision=decision, reason=reason, promoted=candidate if decision == "promoted" else previous)
    return summary


def is_finished_model(root: DataRoot, run: str) -> bool:
    """Whether models/<run>/ is a sealed model whose files are intact."""
    try:
        path = manifest_path(root, "train", run)
    except StorageError:
        return False
    manifest = read_manifest(root, path)
    return manifest is not None and output_state(root, path, manifest.fingerprint) == "done"


def promote_by_hand(root: DataRoot, run: str) -> PromotionRecord:
    """``genreflow promote RUN``: make a finished run the promoted one, whatever it scores."""
    if not is_finished_model(root, run):
        runs = [name for name in root.listdir("models") if is_finished_model(root, name)]
        raise PromotionError(f"no finished model {run!r} under {root.url}; finished runs: "
                             f"{', '.join(runs) if runs else 'none'}")
    previous = read_registry(root).promoted
    record = PromotionRecord(run=run, decision="promoted", reason="promoted by hand (genreflow promote)",
                             policy="by hand", previous=previous)
    record_decision(root, record)
    return record


@task(name="promote")
def promote_task(root_url: str, spec: OutputSpec, candidate_metrics: dict[str, Any],
                 test_shards: list[str], policy: Policy, tolerance: float, test_set: str | None,
                 force: bool) -> dict[str, Any]:
    """The gate's decision on run ``spec.key`` (reports/<run>/promotion.json): :func:`decide_once`."""
    summary, decided = decide_once(DataRoot(root_url), spec, candidate_metrics, test_shards, policy, tolerance,
                                   test_set, force)
    if decided:
        get_run_logger().info("promote: %s %s: %s", spec.key, summary["decision"], summary["reason"])
    return summary


def decide_once(root: DataRoot, spec: OutputSpec, candidate_metrics: dict[str, Any], test_shards: list[str],
                policy: Policy, tolerance: float, test_set: str | None, force: bool) -> tuple[dict[str, Any], bool]:
    """The decision on run ``spec.key``, made once per evaluation while the registry stays as it left it;
    (summary, whether it was decided now).

    A recorded decision whose promoted run is no longer the registry's (another run was promoted since, by a
    rebuild or by hand) is decided again against the promoted one: reusing it would report a model as the one
    ``predict`` uses while the registry names another (issue 25: a parameter changed and changed back).
    """
    def decide_into(out: Output) -> dict[str, Any]:
        summary = decide(root, spec.key, candidate_metrics, test_shards, policy, tolerance, test_set)
        out.write_json(PROMOTION_SUFFIX, summary)
        out.rows = 1
        return summary

    with open_output(root, spec, force) as out:
        if not out.done:
            return decide_into(out), True
        summary = out.read_json(PROMOTION_SUFFIX)
        if summary.get("promoted") == read_registry(root).promoted:
            return summary, False
    with open_output(root, spec, force=True) as out:
        summary = decide_into(out)
    return summary, True
