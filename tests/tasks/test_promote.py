"""The promotion gate's decisions, and promotion by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genreflow.storage.outputs import OutputSpec, open_output
from genreflow.storage.registry import PromotionRecord, read_registry, record_decision
from genreflow.storage.root import DataRoot
from genreflow.tasks.promote import PromotionError, decide, decide_once, gate, is_finished_model, promote_by_hand


@pytest.mark.parametrize(("policy", "candidate", "promoted", "decision"), [
    ("if-better", 0.80, 0.80, "promoted"),  # not worse
    ("if-better", 0.795, 0.80, "promoted"),  # worse by less than the tolerance
    ("if-better", 0.70, 0.80, "rejected"),
    ("if-better", 0.10, None, "promoted"),  # nothing to compare with
    ("always", 0.10, 0.90, "promoted"),
    ("never", 0.99, 0.10, "rejected"),
    ("never", 0.99, None, "rejected"),
])
def test_gate(policy: str, candidate: float, promoted: float | None, decision: str) -> None:
    got, reason = gate(policy, 0.01, candidate, promoted)  # type: ignore[arg-type]
    assert got == decision and reason


def test_a_promoted_model_that_cannot_be_scored_is_replaced_and_the_reason_says_why(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    record_decision(root, PromotionRecord(run="run-gone", decision="promoted", reason="r", policy="always"))
    summary = decide(root, "run-new", {"track_accuracy": 0.5}, [], "if-better", 0.01, "abc")
    assert summary["decision"] == "promoted" and "run-gone" in summary["reason"]
    registry = read_registry(root)
    assert registry.promoted == "run-new" and registry.history[-1].previous == "run-gone"
    again = decide(root, "run-new", {"track_accuracy": 0.5}, [], "if-better", 0.01, "abc")
    assert again["decision"] == "kept" and len(read_registry(root).history) == 2  # nothing new recorded


def finished_model(root: DataRoot, run: str) -> None:
    with open_output(root, OutputSpec("train", run, inputs=run)) as out:
        root.write_bytes(out.add("model.keras"), b"weights")


def test_promote_by_hand_needs_a_finished_intact_model(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    finished_model(root, "run-a")
    (tmp_path / "models" / "run-half").mkdir()  # a training that never finished
    assert is_finished_model(root, "run-a") and not is_finished_model(root, "run-half")
    assert not is_finished_model(root, "../x")
    with pytest.raises(PromotionError, match=r"no finished model 'run-half'.*finished runs: run-a"):
        promote_by_hand(root, "run-half")
    record = promote_by_hand(root, "run-a")
    assert record.previous is None and read_registry(root).promoted == "run-a"
    (tmp_path / "models" / "run-a" / "model.keras").write_bytes(b"altered")
    with pytest.raises(PromotionError):
        promote_by_hand(root, "run-a")


def test_a_decision_is_made_again_once_the_registry_promoted_another_run(tmp_path: Path) -> None:
    """Issue 25's random histories: train A (promoted), change a parameter, train B (promoted), change it back.

    The rebuild finds A's evaluation and decision done; reusing the decision reported A as the model predict
    uses while the registry named B. A gone model cannot be scored, which the gate resolves without TensorFlow.
    """
    root = DataRoot(str(tmp_path))
    spec = OutputSpec("promote", "run-a", inputs=["evaluation of run-a"])
    first, decided = decide_once(root, spec, {"track_accuracy": 0.5}, [], "if-better", 0.01, "abc", False)
    assert decided and first["decision"] == "promoted" and read_registry(root).promoted == "run-a"
    again, decided = decide_once(root, spec, {"track_accuracy": 0.5}, [], "if-better", 0.01, "abc", False)
    assert not decided and again == first  # once per evaluation while the registry stays

    record_decision(root, PromotionRecord(run="run-b", decision="promoted", reason="r", policy="if-better"))
    third, decided = decide_once(root, spec, {"track_accuracy": 0.5}, [], "if-better", 0.01, "abc", False)
    assert decided and third["previous"] == "run-b" and third["promoted"] == read_registry(root).promoted
    assert json.loads((tmp_path / "reports" / "run-a" / "promotion.json").read_text()) == third
    assert third["decision"] == "promoted" and "run-b" in third["reason"]  # run-b is gone: it cannot be scored
    record_decision(root, PromotionRecord(run="run-b", decision="promoted", reason="by hand", policy="by hand"))
    fourth, decided = decide_once(root, spec, {"track_accuracy": 0.5}, [], "never", 0.01, "abc", False)
    assert decided and fourth["decision"] == "rejected" and fourth["promoted"] == "run-b"  # the gate's own words
