"""The zero-signal guard: the per-step fraction of groups without reward spread, the warning and the stop."""

from __future__ import annotations

import io

import pytest
import torch

from rlvr.config.loader import complete_config
from rlvr.errors import UserError
from rlvr.grpo.signal_guard import ZeroSignalGuard, frac_groups_zero_std


def test_frac_groups_zero_std_counts_groups_with_all_equal_rewards():
    """Groups {0,0,0}, {1,1,1} and {0.5,0.5,0.5} have no spread; {0,1,0} has: 3 of 4 groups."""
    rewards = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.5, 0.5, 0.5])
    groups = torch.tensor([7, 7, 7, 3, 3, 3, 9, 9, 9, 4, 4, 4])
    assert frac_groups_zero_std(rewards, groups) == 0.75


def test_a_tiny_spread_is_still_signal():
    """Exact equality, not a tolerance: 1e-7 of spread is a (small) gradient, so the group is not counted."""
    rewards = torch.tensor([0.0, 1e-7, 1.0, 1.0])
    assert frac_groups_zero_std(rewards, torch.tensor([0, 0, 1, 1])) == 0.5


def test_non_contiguous_group_ids_after_dynamic_sampling():
    """Rows of one group need not be adjacent (dynamic sampling concatenates batches with offset ids)."""
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert frac_groups_zero_std(rewards, torch.tensor([10, 20, 10, 20])) == 1.0


def test_warns_once_per_patience_steps_of_a_streak():
    """Patience 3: warnings at the 3rd and 6th dead step of a streak; a step with signal resets the streak."""
    out = io.StringIO()
    guard = ZeroSignalGuard(patience=3, stop=False, stream=out)
    for step, frac in enumerate([1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], start=1):
        guard.update(step, frac)
    text = out.getvalue()
    assert text.count("WARNING [no_learning_signal]") == 2
    assert "3 consecutive GRPO steps (4..6)" in text and "6 consecutive GRPO steps (4..9)" in text
    assert guard.summary() == {"patience": 3, "steps_without_signal": 9, "longest_streak": 7, "warnings": 2}


def test_stop_raises_a_user_error_naming_the_switch():
    guard = ZeroSignalGuard(patience=2, stop=True, stream=io.StringIO())
    guard.update(1, 1.0)
    with pytest.raises(UserError) as info:
        guard.update(2, 1.0)
    message = str(info.value)
    assert message.startswith("[no_learning_signal]")
    assert "grpo.stop_on_zero_signal" in message and "steps (1..2)" in message


def test_null_patience_never_warns_but_still_counts():
    out = io.StringIO()
    guard = ZeroSignalGuard(patience=None, stop=True, stream=out)
    for step in range(1, 50):
        guard.update(step, 1.0)
    assert out.getvalue() == "" and guard.summary()["longest_streak"] == 49


def test_replay_after_resume_continues_the_streak_silently():
    """A resumed run rebuilds the streak from metrics.jsonl: 2 kept dead steps + 1 new one reach patience 3."""
    out = io.StringIO()
    guard = ZeroSignalGuard(patience=3, stop=False, stream=out)
    guard.replay(
        [
            {"step": 0, "validation/accuracy": 0.0},
            {"step": 1, "train/frac_groups_zero_std": 1.0},
            {"step": 2, "train/frac_groups_zero_std": 1.0},
        ]
    )
    assert out.getvalue() == ""
    guard.update(3, 1.0)
    assert "(1..3)" in out.getvalue()


def test_from_config_defaults_for_upstream_configs_without_the_keys():
    """An upstream grpo section without the rlvr keys gets the schema's defaults: warn after 10 steps."""
    guard = ZeroSignalGuard.from_config(complete_config({"grpo": {"num_prompts_per_step": 4}})["grpo"])
    assert (guard.patience, guard.stop) == (10, False)
