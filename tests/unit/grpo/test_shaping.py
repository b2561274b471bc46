"""Reward scaling and shaping, dynamic sampling, the sequence log-prob-error mask and validation scores."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from rlvr.errors import ConfigError, UserError
from rlvr.grpo.advantages import group_baseline_and_std
from rlvr.grpo.shaping import (
    DynamicSampler,
    compute_validation_scores,
    mask_by_seq_logprob_error,
    scale_rewards,
    seq_logprob_error,
    shape_rewards,
)


def test_scale_rewards_clamps_then_maps():
    """[0,1] → [-1,1]: -0.5 and 2 are clamped to 0 and 1 first; 0.25 maps to -1 + 0.25·2 = -0.5."""
    r = torch.tensor([-0.5, 0.0, 0.25, 1.0, 2.0])
    out = scale_rewards(r, source_min=0.0, source_max=1.0, target_min=-1.0, target_max=1.0)
    assert_close(out, torch.tensor([-1.0, -1.0, -0.5, 1.0, 1.0]))
    with pytest.raises(ConfigError, match="source_max"):
        scale_rewards(r, source_min=1.0, source_max=1.0)


def test_stop_properly_penalty_scales_truncated_rows_only():
    """stop_properly_penalty_coef = 0.5 halves truncated rewards and ignores the DAPO keys."""
    out = shape_rewards(
        torch.tensor([1.0, 1.0, 0.0]),
        truncated=torch.tensor([True, False, True]),
        response_lengths=torch.tensor([100, 100, 100]),
        stop_properly_penalty_coef=0.5,
        overlong_buffer_length=4,
    )
    assert_close(out, torch.tensor([0.5, 1.0, 0.0]))
    with pytest.raises(ConfigError, match="stop_properly_penalty_coef"):
        shape_rewards(
            torch.ones(1), truncated=torch.ones(1), response_lengths=torch.ones(1), stop_properly_penalty_coef=1.5
        )


def test_dapo_overlong_penalty_by_hand():
    """max 16, buffer 4, penalty 1 ⇒ L_exp = 12; len 10,12,14,16,20 ⇒ penalty 0, 0, -0.5, -1, -2."""
    out = shape_rewards(
        torch.ones(5),
        truncated=torch.zeros(5, dtype=torch.bool),
        response_lengths=torch.tensor([10, 12, 14, 16, 20]),
        overlong_buffer_length=4,
        overlong_buffer_penalty=1.0,
        max_response_length=16,
    )
    assert_close(out, torch.tensor([1.0, 1.0, 0.5, 0.0, -1.0]))


def test_dapo_needs_its_keys():
    """Shaping enabled with neither stop_properly_penalty_coef nor the DAPO keys is an error naming the keys."""
    with pytest.raises(ConfigError, match="overlong_buffer_penalty"):
        shape_rewards(
            torch.ones(1),
            truncated=torch.zeros(1),
            response_lengths=torch.ones(1),
            overlong_buffer_length=4,
            max_response_length=16,
        )
    with pytest.raises(ConfigError, match="overlong_buffer_length"):
        shape_rewards(
            torch.ones(1),
            truncated=torch.zeros(1),
            response_lengths=torch.ones(1),
            overlong_buffer_length=32,
            overlong_buffer_penalty=1.0,
            max_response_length=16,
        )


def test_dynamic_sampler_caches_across_batches_and_slices():
    """Target 4: batch 1 keeps 2 rows (incomplete), batch 2 keeps 3 ⇒ the first 4 of 5 cached rows, 1 discarded."""
    ds = DynamicSampler(target_rows=4, max_gen_batches=3)
    first = ds.add(
        {"ids": torch.tensor([10, 11, 12, 13]), "text": ["a", "b", "c", "d"]}, torch.tensor([0.0, 0.5, 0.5, 0.0])
    )
    assert not first.complete and first.batch is None and first.num_cached_rows == 2
    second = ds.add(
        {"ids": torch.tensor([20, 21, 22, 23]), "text": ["e", "f", "g", "h"]}, torch.tensor([1.0, 1.0, 1.0, 0.0])
    )
    assert second.complete and second.num_gen_batches == 2
    assert torch.equal(second.batch["ids"], torch.tensor([11, 12, 20, 21]))
    assert second.batch["text"] == ["b", "c", "e", "f"]
    assert second.num_discarded_valid_samples == 1
    assert ds.num_gen_batches == 0  # reset for the next step


def test_dynamic_sampler_errors_after_max_gen_batches():
    """With max_gen_batches = 2, batches 1 and 2 may be short; a short cache after batch 3 is an error."""
    ds = DynamicSampler(target_rows=4, max_gen_batches=2)
    one_good = ({"x": torch.arange(2)}, torch.tensor([1.0, 0.0]))
    assert not ds.add(*one_good).complete
    assert not ds.add(*one_good).complete
    with pytest.raises(UserError, match="dynamic_sampling_max_gen_batches"):
        ds.add(*one_good)


def test_dynamic_sampling_with_loo_drops_only_the_odd_row():
    """With the LOO std, group [1,0,0,0] loses only row 0 (its peers are all 0); group [1,1,1,1] loses all rows."""
    rewards = torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 1])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    _, std = group_baseline_and_std(rewards, groups, leave_one_out=True)
    out = DynamicSampler(target_rows=3, max_gen_batches=1).add({"row": torch.arange(8)}, std)
    assert out.complete and torch.equal(out.batch["row"], torch.tensor([1, 2, 3]))


def test_seq_logprob_error_and_mask_by_hand():
    """Row errors: (e^ln2 + e^0)/2 = 1.5; row 1 only its first token: e^ln3 = 3; row 2 sample-masked → 0."""
    gen = torch.tensor([[math.log(2.0), 0.0], [math.log(3.0), math.log(5.0)], [9.0, 9.0]])
    prev = torch.zeros(3, 2)
    token_mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    sample_mask = torch.tensor([1.0, 1.0, 0.0])
    assert_close(seq_logprob_error(gen, prev, token_mask, sample_mask), torch.tensor([1.5, 3.0, 0.0]))
    new_mask, m = mask_by_seq_logprob_error(
        gen, prev, token_mask, sample_mask, threshold=2.0, rewards=torch.tensor([0.0, 1.0, 1.0])
    )
    assert_close(new_mask, torch.tensor([1.0, 0.0, 0.0]))
    assert (m["max_seq_mult_prob_error"], m["min_seq_mult_prob_error"]) == pytest.approx((3.0, 1.5))
    assert m["mean_seq_mult_prob_error"] == pytest.approx(2.25)
    assert m["max_seq_mult_prob_error_after_mask"] == pytest.approx(1.5)
    assert m["num_masked_seqs_by_logprob_error"] == 1.0
    assert m["masked_correct_pct"] == pytest.approx(100.0)
    unchanged, m_off = mask_by_seq_logprob_error(gen, prev, token_mask, sample_mask, threshold=None)
    assert torch.equal(unchanged, sample_mask) and m_off["num_masked_seqs_by_logprob_error"] == 0.0


def test_validation_scores():
    """Rewards [1,0 | 0,0 | .5,0]: accuracy = 1.5/6 = 0.25, pass@2 = 2 of 3 prompts solved."""
    scores = compute_validation_scores(torch.tensor([1.0, 0, 0, 0, 0.5, 0]), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert scores["accuracy"] == pytest.approx(0.25)
    assert scores["pass_k"] == pytest.approx(2 / 3)
    assert scores["k"] == 2.0
