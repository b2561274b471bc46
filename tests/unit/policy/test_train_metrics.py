"""The train-metric reductions declared in rlvr.policy.train_metrics, at each of the three folding levels."""

from __future__ import annotations

import pytest
import torch

from rlvr.policy.train_metrics import Fold, fold, reduction


def test_micro_batches_sum_loss_metrics_and_min_max_the_bounds():
    """Loss metrics are pre-divided by the global counts, so micro-batches add up; 0-d tensors become floats."""
    parts = [
        {"loss": torch.tensor(0.25), "probs_ratio": 0.5, "probs_ratio_min": 0.9, "probs_ratio_max": 1.2},
        {"loss": torch.tensor(-0.5), "probs_ratio": 0.5, "probs_ratio_min": 0.8, "probs_ratio_max": 1.1},
    ]
    out = fold(parts, Fold.MICRO_BATCHES)
    assert out == {"loss": -0.25, "probs_ratio": 1.0, "probs_ratio_min": 0.8, "probs_ratio_max": 1.2}
    assert all(type(v) is float for v in out.values())


def test_optimizer_steps_average_and_keep_the_last_grad_norm():
    """One GRPO step reports the mean over its optimizer steps, the last pre-clip norm and the mean global counts;
    a metric missing from a step counts as 0 in the mean (every step is one part)."""
    steps = [
        {"loss": 1.0, "x_min": 0.5, "x_max": 2.0, "grad_norm": 3.0, "global_valid_toks": 10.0, "only_first": 4.0},
        {"loss": 3.0, "x_min": 0.7, "x_max": 1.0, "grad_norm": 5.0, "global_valid_toks": 20.0},
    ]
    assert fold(steps, Fold.OPTIMIZER_STEPS) == {
        "loss": 2.0,
        "x_min": 0.5,
        "x_max": 2.0,
        "grad_norm": 5.0,
        "global_valid_toks": 15.0,
        "only_first": 2.0,
    }


def test_ranks_sum_loss_metrics_and_take_replicated_ones_from_rank_0():
    ranks = [
        {"loss": 0.5, "grad_norm": 2.0, "lr": 0.1, "num_optimizer_steps": 2.0, "global_valid_seqs": 8.0},
        {"loss": 0.25, "grad_norm": 2.0, "lr": 0.1, "num_optimizer_steps": 2.0, "global_valid_seqs": 8.0},
    ]
    assert fold(ranks, Fold.RANKS) == {
        "loss": 0.75,
        "grad_norm": 2.0,
        "lr": 0.1,
        "num_optimizer_steps": 2.0,
        "global_valid_seqs": 8.0,
    }


def test_a_metric_set_once_per_call_is_never_folded_below_the_ranks():
    """lr and num_optimizer_steps are set once per train call: folding them over steps is a programming error."""
    assert reduction("lr", Fold.RANKS) == "first"
    with pytest.raises(ValueError, match="set once per optimizer_steps"):
        fold([{"lr": 0.1}], Fold.OPTIMIZER_STEPS)
