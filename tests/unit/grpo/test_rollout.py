"""rlvr.grpo.rollout: repeating prompts into groups, the ``[B, S]`` training layout, the loss sample mask, and the
rollout's own bookkeeping (select / concat for dynamic sampling, generation metrics). Tiny hand-written cases."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from rlvr.generation.base import GenerationOutput
from rlvr.grpo.rollout import Rollout, loss_sample_mask, repeat_prompts, rollout_metrics, to_train_tensors


def out(tokens: list[int], truncated: bool = False) -> GenerationOutput:
    return GenerationOutput(
        token_ids=tokens, logprobs=[-0.5 - 0.1 * i for i in range(len(tokens))], text="t", truncated=truncated
    )


def test_prompts_repeat_contiguously_with_one_group_id_each():
    rows, ids, groups = repeat_prompts([{"p": "a"}, {"p": "b"}], [[5], [6, 7]], group_offset=3, times=2)
    assert [r["p"] for r in rows] == ["a", "a", "b", "b"]
    assert ids == [[5], [5], [6, 7], [6, 7]] and ids[0] is not ids[1]  # copies: a later edit touches one row
    assert groups.tolist() == [3, 3, 4, 4]


def test_train_tensors_are_right_padded_with_masks_on_generated_tokens_only():
    """Row 0: prompt [5, 6, 7] + reply [8, 9]; row 1: prompt [5] + empty reply. Longest row 5, padded to a
    multiple of 4: S = 8. The sampler's log-prob of token t sits at position t (nothing is shifted)."""
    batch = to_train_tensors([[5, 6, 7], [5]], [out([8, 9]), out([])], pad_id=0, multiple_of=4)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0, 0, 0], [5, 0, 0, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]]
    assert batch["token_mask"].tolist() == [[0, 0, 0, 1, 1, 0, 0, 0], [0] * 8]
    assert_close(batch["generation_logprobs"][0], torch.tensor([0, 0, 0, -0.5, -0.6, 0, 0, 0]))
    assert not batch["generation_logprobs"][1].any()


@pytest.mark.parametrize(
    ("overlong", "max_input", "expected"),
    [
        (False, None, [1, 1, 1, 1]),
        (True, None, [1, 0, 1, 0]),  # rows 1 and 3 ran out of tokens
        (False, 3, [1, 1, 0, 0]),  # rows 2 and 3 have 3-token prompts: >= max_input_seq_length
        (True, 3, [1, 0, 0, 0]),
    ],
)
def test_loss_sample_mask_combines_overlong_filtering_and_prompt_length(overlong, max_input, expected):
    rollout = Rollout(
        [{}] * 4,
        torch.tensor([0, 0, 1, 1]),
        [[5, 6], [5, 6], [5, 6, 7], [5, 6, 7]],
        [out([8]), out([8, 9], truncated=True), out([8]), out([9, 9], truncated=True)],
    )
    mask, metrics = loss_sample_mask(rollout, overlong_filtering=overlong, max_input_seq_length=max_input)
    assert mask.tolist() == expected and metrics == {}


def _rollout(offset: int) -> Rollout:
    return Rollout(
        [{"i": offset}, {"i": offset + 1}],
        torch.tensor([offset, offset]),
        [[5], [6]],
        [out([8]), out([9, 9])],
        rewards=torch.tensor([1.0, 0.0]) + offset,
        raw_rewards=torch.tensor([1.0, 0.0]),
        reward_errors={"timeouts": 1.0},
    )


def test_concat_then_select_keeps_every_column_aligned():
    """Dynamic sampling concatenates generation batches, then keeps rows by index; reward error counts add up."""
    merged = Rollout.concat([_rollout(0), _rollout(10)])
    assert merged.reward_errors == {"timeouts": 2.0}
    kept = merged.select(torch.tensor([1, 2]))
    assert [r["i"] for r in kept.rows] == [1, 10] and kept.group_ids.tolist() == [0, 10]
    assert kept.prompt_ids == [[6], [5]] and [o.token_ids for o in kept.outputs] == [[9, 9], [8]]
    assert kept.rewards.tolist() == [0.0, 11.0] and kept.raw_rewards.tolist() == [0.0, 1.0]


def test_rollout_metrics_describe_lengths_and_truncation():
    """Replies of 1 and 2 tokens (the second truncated) after 1-token prompts."""
    rollout = _rollout(0)
    rollout.outputs[1].truncated = True
    assert rollout_metrics(rollout) == {
        "train/mean_gen_tokens_per_sample": 1.5,
        "train/max_gen_tokens_per_sample": 2.0,
        "train/mean_prompt_length": 1.0,
        "train/mean_total_tokens_per_sample": 2.5,
        "train/truncation_rate": 0.5,
        "train/natural_termination_rate": 0.5,
    }


def test_the_fake_policy_is_a_policy():
    """The controller tests' fake implements the whole rlvr.policy.base.Policy protocol, so the roles object
    drives it through the same methods as a real backend."""
    from rlvr.policy.base import Policy
    from tests.unit.grpo.fakes import FakePolicy

    assert isinstance(FakePolicy(), Policy)
