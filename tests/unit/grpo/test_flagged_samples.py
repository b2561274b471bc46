"""env.should_mask_flagged_samples: NeMo-Gym samples flagged ``mask_sample`` get no loss (they were only counted).

From the reward server's answer (a real loopback HTTP server scripted to flag some responses) through the
RewardWorker and the rollout's ``sample_mask`` to the loss input: a flagged sample's log-probs get zero gradient.
"""

from __future__ import annotations

import torch

from rlvr.config.loader import complete_config
from rlvr.generation.base import GenerationOutput
from rlvr.grpo.loss import ClippedPGLoss
from rlvr.grpo.roles import RewardWorker
from rlvr.grpo.rollout import Rollout, loss_sample_mask, to_train_tensors
from tests.unit.gym.gym_helpers import FakeServer, gym_row


def _flag_when_asked(method, path, body):
    """/verify: reward 1 for responses saying '2'; a response containing 'MASK' is flagged for masking."""
    if method == "GET":
        return 200, {"status": "ok"}
    text = body["response"]["output"][0]["content"][0]["text"]
    return 200, {**body, "reward": float("2" in text), "mask_sample": "MASK" in text}


def _rollout(texts: list[str], flagged: torch.Tensor | None) -> Rollout:
    outputs = [
        GenerationOutput(token_ids=[5, 6, 1], logprobs=[-0.5, -0.7, -0.1], text=t, truncated=False) for t in texts
    ]
    return Rollout(
        [{"task_name": "nemo_gym"}] * len(texts),
        torch.tensor([0, 0, 1, 1]),
        [[3, 4]] * len(texts),
        outputs,
        rewards=torch.tensor([1.0, 0.0, 1.0, 0.0]),
        raw_rewards=torch.tensor([1.0, 0.0, 1.0, 0.0]),
        flagged=flagged,
    )


def test_reward_worker_returns_the_servers_mask_flags():
    server = FakeServer(_flag_when_asked)
    try:
        cfg = complete_config(
            {
                "env": {
                    "should_use_nemo_gym": True,
                    "nemo_gym": {
                        "resource_servers": {"math_with_judge": {"url": server.url, "kind": "math"}},
                        "request_timeout_s": 5.0,
                        "max_retries": 0,
                    },
                },
                "policy": {"model_name": "my-policy"},
            }
        )
        worker = RewardWorker(cfg)
        try:
            scored = worker.score([gym_row()] * 3, ["2", "MASK 2", "3"])
            rewards, metrics, flagged = scored.rewards, scored.metrics, scored.flagged
        finally:
            worker.close()
    finally:
        server.close()
    assert rewards.tolist() == [1.0, 1.0, 0.0] and flagged.tolist() == [False, True, False]
    assert metrics["gym/masked"] == 1.0


def test_flagged_samples_leave_the_loss_only_with_the_switch():
    """Switch off: flagged rows are counted but stay in the loss. On: their sample_mask is 0 (the rest unchanged)."""
    rollout = _rollout(["2", "MASK", "2", "3"], torch.tensor([False, True, False, False]))
    mask, metrics = loss_sample_mask(rollout)
    assert mask.tolist() == [1.0, 1.0, 1.0, 1.0] and metrics == {"train/flagged_samples": 1.0}
    mask, metrics = loss_sample_mask(rollout, mask_flagged=True)
    assert mask.tolist() == [1.0, 0.0, 1.0, 1.0]
    assert metrics == {"train/flagged_samples": 1.0, "train/masked_flagged_samples": 1.0}
    # Native verifiers never flag: nothing is counted or masked.
    mask, metrics = loss_sample_mask(_rollout(["2"] * 4, None), mask_flagged=True)
    assert mask.tolist() == [1.0] * 4 and metrics == {}


def test_dynamic_sampling_keeps_flags_aligned_with_rows():
    rollout = _rollout(["a", "b", "c", "d"], torch.tensor([False, True, False, True]))
    merged = Rollout.concat([rollout, rollout]).select(torch.tensor([1, 2, 7]))
    assert merged.flagged.tolist() == [True, False, True]


def test_the_loss_input_gives_a_flagged_sample_no_gradient():
    """The loss built from the masked batch: d loss / d logprobs is 0 on every token of the flagged sample, and
    the loss equals the loss of the batch without that sample."""
    rollout = _rollout(["2", "MASK", "2", "3"], torch.tensor([False, True, False, False]))
    batch = to_train_tensors(rollout.prompt_ids, rollout.outputs, pad_id=0)
    batch["sample_mask"], _ = loss_sample_mask(rollout, mask_flagged=True)
    batch["prev_logprobs"] = batch["generation_logprobs"].clone()
    batch["reference_policy_logprobs"] = torch.zeros_like(batch["generation_logprobs"])
    batch["advantages"] = torch.tensor([1.0, 5.0, 1.0, -1.0]).unsqueeze(-1) * batch["token_mask"]
    loss_fn = ClippedPGLoss({"force_on_policy_ratio": False, "use_importance_sampling_correction": False})
    logprobs = (batch["generation_logprobs"] - 0.1).requires_grad_()
    mask = batch["token_mask"] * batch["sample_mask"].unsqueeze(-1)
    loss, _ = loss_fn(logprobs, batch, mask.amax(-1).sum(), mask.sum())
    loss.backward()
    assert torch.count_nonzero(logprobs.grad[1]) == 0 and torch.count_nonzero(logprobs.grad[0]) > 0
    keep = torch.tensor([0, 2, 3])
    sub = {k: v[keep] for k, v in batch.items()}
    sub_loss, _ = loss_fn(logprobs.detach()[keep], sub, sub["sample_mask"].sum(), sub["token_mask"].sum())
    torch.testing.assert_close(loss.detach(), sub_loss)
