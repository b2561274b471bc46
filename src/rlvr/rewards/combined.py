"""Score a batch with the run's reward functions (``env.reward_functions``, see :mod:`rlvr.rewards.custom`) and
combine them by weight.

All checks of all functions go to the scorer in one batch, so verifier checks, callables and sandboxed programs run
in parallel. Each function's values are kept apart (``reward/<name>`` metrics, rollout dumps), and each failed check
is kept with its function, cause and detail.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlvr.rewards.custom import INTERNAL_NAME, RewardFunction, tag_rows
from rlvr.rewards.scorer import RewardScorer


@dataclass
class CombinedScore:
    """``rewards[i] = sum_f weight_f * values[f][i]``; ``failures[i]`` maps a function name to
    ``{"kind": cause, "detail": text}`` for each function whose check of sample ``i`` failed."""

    rewards: list[float]
    values: dict[str, list[float]]
    failures: list[dict[str, dict[str, str | None]]]
    metrics: dict[str, float]  # reward_errors/<cause> summed over functions, reward_errors/total


def score_with_functions(
    scorer: RewardScorer,
    functions: Sequence[RewardFunction],
    rows: Sequence[dict],
    responses: Sequence[str],
    env: dict[str, Any],
) -> CombinedScore:
    """Every function on every ``(row, response)``; verifier values mapped onto ``env.<task>.reward_*``."""
    n = len(rows)
    task_names: list[str] = []
    scored_rows: list[dict] = []
    for function in functions:
        if function.is_verifier:
            task_names += [row["task_name"] for row in rows]
            scored_rows += list(rows)
        else:
            task_names += [INTERNAL_NAME] * n
            scored_rows += tag_rows(rows, function)
    result = scorer.score_batch(task_names, list(responses) * len(functions), scored_rows)
    values: dict[str, list[float]] = {}
    failures: list[dict[str, dict[str, str | None]]] = [{} for _ in range(n)]
    for k, function in enumerate(functions):
        part = slice(k * n, (k + 1) * n)
        raw = result.rewards[part]
        if function.is_verifier:
            raw = [_verifier_value(env, row, r) for row, r in zip(rows, raw)]
        values[function.name] = raw
        for i, (cause, detail) in enumerate(zip(result.per_row_error[part], result.details[part])):
            if cause is not None:
                failures[i][function.name] = {"kind": cause, "detail": detail}
    rewards = [sum(f.weight * values[f.name][i] for f in functions) for i in range(n)]
    return CombinedScore(rewards, values, failures, result.metrics())


def _verifier_value(env: dict[str, Any], row: dict, verdict: float) -> float:
    task = env[row["task_name"]]
    return task["reward_wrong"] + (task["reward_correct"] - task["reward_wrong"]) * verdict


def failure_summary(failures: Sequence[dict[str, dict[str, str | None]]]) -> dict[str, tuple[int, str]]:
    """Per function: how many samples failed and the first failure as text (for a warning line)."""
    out: dict[str, tuple[int, str]] = {}
    for per_sample in failures:
        for name, failure in per_sample.items():
            count, first = out.get(name, (0, f"{failure['kind']}: {failure['detail']}"))
            out[name] = (count + 1, first)
    return out
