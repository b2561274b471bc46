"""The RewardWorker on the native path scores with env.reward_functions: the weighted reward, each function's
values for the rollout, the failed checks per sample, and a loud line when a function of the user's fails."""

from __future__ import annotations

from rlvr.config.schema import section_defaults
from rlvr.grpo.roles import RewardWorker


def test_reward_worker_combines_keeps_apart_and_warns(capsys):
    env = section_defaults("rlvr_config.schema.yaml", "env")
    env["math"]["num_workers"] = 1
    env["reward_functions"] = [
        {"name": "correct", "function": "verifier", "weight": 1.0},
        {"name": "fmt", "function": "format", "weight": 0.5},
        {"name": "buggy", "function": "tests.unit.rewards.reward_fns:raises", "weight": 3.0},
    ]
    worker = RewardWorker({"env": env, "policy": {}})
    try:
        rows = [{"task_name": "math", "ground_truth": "4", "prompt": "2+2="}] * 2
        scored = worker.score(rows, ["\\boxed{4}", "5"])
    finally:
        worker.close()
    assert scored.rewards.tolist() == [1.5, 0.0] and scored.flagged is None
    assert {k: v.tolist() for k, v in scored.components.items()} == {
        "correct": [1.0, 0.0],
        "fmt": [1.0, 0.0],
        "buggy": [0.0, 0.0],
    }
    assert [f["buggy"]["kind"] for f in scored.failures] == ["exception", "exception"]
    assert scored.metrics["reward_errors/exception"] == 2
    out = capsys.readouterr().out
    assert "WARNING [reward_function] buggy: 2 of 2 samples failed (first: exception: ValueError: my reward" in out
