"""HFPolicy details used by the distributed runs: a frozen (reference) model, and the all-reduce hook at W=1."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing import assert_close

from rlvr.errors import ConfigError
from rlvr.policy.hf import HFPolicy

ADAMW = {"name": "torch.optim.AdamW", "kwargs": {"lr": 1e-3}}


def make_batch() -> dict[str, torch.Tensor]:
    """4 rows of 8 tokens (row 3 ends at 5), prompt of 2, advantages ±1."""
    g = torch.Generator().manual_seed(0)
    attention = (torch.arange(8) < torch.tensor([8, 8, 6, 5])[:, None]).long()
    token_mask = attention.float()
    token_mask[:, :2] = 0
    return {
        "input_ids": torch.randint(4, 21, (4, 8), generator=g) * attention,
        "attention_mask": attention,
        "token_mask": token_mask,
        "sample_mask": torch.ones(4),
        "advantages": torch.tensor([1.0, -1.0, 1.0, -1.0])[:, None].expand(4, 8),
    }


def pg_loss(lp, data, global_valid_seqs, global_valid_toks):
    """-Σ A·lp·m / N_tok (t >= 1)."""
    mask = (data["token_mask"] * data["sample_mask"][:, None])[:, 1:]
    return -(data["advantages"][:, 1:] * lp[:, 1:] * mask).sum() / global_valid_toks, {"tokens": mask.sum()}


def test_frozen_model_scores_but_has_no_optimizer(model):
    """requires_grad_(False) (the reference policy): no optimizer is built (torch refuses an empty list), the
    log-probs equal a trainable policy's, train() is a ConfigError, and state_dict round-trips."""
    frozen = HFPolicy(copy.deepcopy(model).requires_grad_(False), optimizer=ADAMW, temperature=0.7)
    assert frozen.optimizer is None and frozen.scheduler is None
    batch = make_batch()
    expected = HFPolicy(model, optimizer=ADAMW, temperature=0.7).get_logprobs(
        batch["input_ids"], batch["attention_mask"], micro_batch_size=2, filtered=False
    )
    got = frozen.get_logprobs(batch["input_ids"], batch["attention_mask"], micro_batch_size=2, filtered=False)
    assert_close(got, expected, atol=0, rtol=0)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        frozen.train(batch, pg_loss, global_batch_size=4, micro_batch_size=2)
    state = frozen.state_dict()
    assert state["optimizer"] is None and state["scheduler"] is None
    frozen.load_state_dict(state)


def test_all_reduce_hook_with_one_rank_changes_nothing(make_model):
    """An identity all-reduce (one rank) is called for N_seq, N_tok, the has-grad flags and one gradient
    bucket per optimizer step, and the metrics and weights equal a policy without the hook exactly."""
    calls: list[tuple[int, ...]] = []
    plain = HFPolicy(make_model(3), optimizer=ADAMW)
    hooked = HFPolicy(make_model(3), optimizer=ADAMW, all_reduce=lambda t: calls.append(tuple(t.shape)))
    batch = make_batch()
    expected = plain.train(batch, pg_loss, global_batch_size=2, micro_batch_size=1)
    assert hooked.train(batch, pg_loss, global_batch_size=2, micro_batch_size=1) == expected
    num_params = len(list(plain.model.parameters()))
    numel = sum(p.numel() for p in plain.model.parameters())
    assert calls == [(), (), (num_params,), (numel,)] * 2  # 2 optimizer steps
    for name, weight in plain.model.state_dict().items():
        assert_close(hooked.model.state_dict()[name], weight, atol=0, rtol=0)
