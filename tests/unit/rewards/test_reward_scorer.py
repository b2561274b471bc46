"""score_batch routes rows to verifiers by task name and counts every failure under its cause."""

from __future__ import annotations

import pytest

from rlvr.errors import ConfigError, DataError
from rlvr.rewards.scorer import ScoreResult
from rlvr.rewards.verdict import ERROR_CAUSES, Verdict


def _math(truth: str) -> dict:
    return {"task_name": "math", "ground_truth": truth}


def test_batch_rewards_errors_and_per_row_causes(scorer) -> None:
    """Right, wrong and failing rows get 1/0/0, and only the failure is counted (as an exception)."""
    rows = [_math("2"), _math("\\frac{1}{2}"), _math(""), _math("9")]
    responses = ["1+1 = \\boxed{2}", "\\boxed{0.25}", "\\boxed{1}", "\\boxed{9}"]
    result = scorer.score_batch(["math"] * 4, responses, rows)
    assert result.rewards == [1.0, 0.0, 0.0, 1.0]
    assert result.per_row_error == [None, None, "exception", None]
    assert result.errors["exception"] == 1
    assert sum(result.errors.values()) == 1
    assert set(ERROR_CAUSES) <= set(result.errors)  # stable metric keys, zeros included


def test_scorer_is_reused_across_batches(scorer) -> None:
    """The same worker processes serve consecutive batches (created once, not per call)."""
    scorer.score_batch(["math"], ["\\boxed{1}"], [_math("1")])
    pids = [w.process.pid for w in scorer.pool._workers]
    scorer.score_batch(["math"] * 3, ["\\boxed{1}"] * 3, [_math("1")] * 3)
    assert [w.process.pid for w in scorer.pool._workers] == pids


def test_unknown_task_name_lists_known_verifiers(scorer) -> None:
    """A task name no verifier is registered for fails before any work, naming the known ones."""
    with pytest.raises(ConfigError, match="'physics'.*known verifiers: .*math"):
        scorer.score_batch(["physics"], ["x"], [_math("1")])


def test_row_without_reference_names_the_row(scorer) -> None:
    """A math row lacking ground_truth raises a DataError naming the row index."""
    with pytest.raises(DataError, match="row 1 .*ground_truth"):
        scorer.score_batch(["math", "math"], ["a", "b"], [_math("1"), {"task_name": "math"}])


def test_mismatched_lengths_are_rejected(scorer) -> None:
    """One task name, response and row per sample, or a clear error."""
    with pytest.raises(ValueError, match="2 task names, 1 responses and 1 rows"):
        scorer.score_batch(["math", "math"], ["x"], [_math("1")])


def test_metrics_flatten_counts() -> None:
    """metrics() exposes each cause and the total under a prefix."""
    result = ScoreResult.from_verdicts([Verdict(1.0), Verdict(0.0, "timeout"), Verdict(0.0, "timeout")])
    metrics = result.metrics()
    assert metrics["reward_errors/timeout"] == 2.0
    assert metrics["reward_errors/total"] == 2.0
    assert metrics["reward_errors/exception"] == 0.0
