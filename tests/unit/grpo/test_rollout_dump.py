"""Rollout dumps: <run>/rlvr/rollouts/step_<N>.jsonl with what was generated and how it was scored, sampled or
full, rewritten whole when a step is redone; and the sample table the trackers get."""

from __future__ import annotations

import json

import pytest
import torch

from rlvr.generation.base import GenerationOutput
from rlvr.grpo.rollout import Rollout, reward_component_metrics
from rlvr.grpo.rollout_dump import RolloutDumps, dump_path, table_columns


def _rollout(n: int = 6) -> Rollout:
    outputs = [
        GenerationOutput(token_ids=[5] * (i % 3 + 1), logprobs=[-0.5] * (i % 3 + 1), text=f"r{i}", truncated=i == 5)
        for i in range(n)
    ]
    rows = [{"task_name": "math", "prompt": f"p{i // 2}", "ground_truth": str(i // 2)} for i in range(n)]
    return Rollout(
        rows,
        torch.arange(n) // 2,
        [[3, 4]] * n,
        outputs,
        rewards=torch.arange(n, dtype=torch.float32) / 10,
        raw_rewards=torch.arange(n, dtype=torch.float32),
        reward_components={"correct": torch.ones(n), "fmt": torch.zeros(n)},
        reward_failures=[{"fmt": {"kind": "timeout", "detail": "no answer"}} if i == 2 else {} for i in range(n)],
    )


def _tensors(n: int = 6):
    """advantages [B, S] over a 2-token prompt: sample i's response tokens hold i, i+1, ... (mean hand-computed)."""
    token_mask = torch.zeros(n, 5)
    advantages = torch.full((n, 5), 99.0)  # prompt and padding values must not leak into the mean
    for i in range(n):
        length = i % 3 + 1
        token_mask[i, 2 : 2 + length] = 1
        advantages[i, 2 : 2 + length] = torch.arange(length, dtype=torch.float32) + i
    sample_mask = torch.tensor([1.0, 1, 1, 0, 1, 1])
    return advantages, token_mask, sample_mask


def test_full_dump_holds_every_sample_with_its_scores(tmp_path):
    dumps = RolloutDumps(tmp_path, mode="full", rows=4, seed=1)
    table = dumps.write(3, _rollout(), *_tensors())
    path = tmp_path / "rollouts" / "step_3.jsonl"
    assert dump_path(tmp_path, 3) == path
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["sample"] for r in records] == list(range(6)) and [r["group"] for r in records] == [0, 0, 1, 1, 2, 2]
    r = records[4]  # 2 response tokens with advantages 4 and 5
    assert r["prompt"] == "p2" and r["response"] == "r4" and r["reference"] == "2" and r["task_name"] == "math"
    assert r["advantage"] == 4.5 and r["reward"] == pytest.approx(0.4) and r["raw_reward"] == 4.0
    assert r["rewards"] == {"correct": 1.0, "fmt": 0.0} and r["failures"] == {} and r["response_tokens"] == 2
    assert records[2]["failures"] == {"fmt": {"kind": "timeout", "detail": "no answer"}}
    assert records[3]["in_loss"] is False and records[5]["truncated"] is True and records[0]["advantage"] == 0.0
    assert len(table) == 4 and all(t in records for t in table)  # the table is a sample of the full dump


def test_sampled_dump_is_seeded_and_a_redone_step_replaces_its_file(tmp_path):
    dumps = RolloutDumps(tmp_path, mode="sampled", rows=3, seed=7)
    first = dumps.write(2, _rollout(), *_tensors())
    chosen = [r["sample"] for r in first]
    assert len(chosen) == 3 and chosen == sorted(chosen) and chosen == dumps.chosen(2, 6)
    assert RolloutDumps(tmp_path, mode="sampled", rows=3, seed=7).chosen(2, 6) == chosen  # same seed, same rows
    again = dumps.write(2, _rollout(), *_tensors())  # a step redone after a resume
    lines = dump_path(tmp_path, 2).read_text().splitlines()
    assert len(lines) == 3 and [json.loads(line) for line in lines] == again
    assert not list((tmp_path / "rollouts").glob("*.tmp*"))


def test_no_dump_when_off(tmp_path):
    assert RolloutDumps(tmp_path, mode="none", rows=3, seed=1).write(1, _rollout(), *_tensors()) == []
    assert not (tmp_path / "rollouts").exists()
    with pytest.raises(ValueError, match="none', 'sampled', 'full"):
        RolloutDumps(tmp_path, mode="off", rows=3, seed=1)


def test_table_has_one_column_per_reward_function_and_failures_as_text(tmp_path):
    records = RolloutDumps(tmp_path, mode="full", rows=6, seed=1).write(1, _rollout(), *_tensors())
    columns, data = table_columns(records)
    assert columns == [
        "step", "sample", "group", "prompt", "response", "reference", "reward", "advantage",
        "reward/correct", "reward/fmt", "failures",
    ]  # fmt: skip
    assert data[2][-1] == "fmt: timeout (no answer)" and data[2][columns.index("reward/correct")] == 1.0
    assert reward_component_metrics(_rollout().reward_components, "train/") == {
        "train/reward/correct": 1.0,
        "train/reward/fmt": 0.0,
    }


def test_select_and_concat_keep_the_components_and_failures():
    rollout = _rollout()
    both = Rollout.concat([rollout, rollout]).select(torch.tensor([2, 7]))
    assert both.reward_components["correct"].tolist() == [1.0, 1.0]
    assert both.reward_failures == [{"fmt": {"kind": "timeout", "detail": "no answer"}}, {}]
