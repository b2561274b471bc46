"""Shared-prompt training log-probs: each distinct prompt runs once, the result equals the plain forward's."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from rlvr.policy.hf import HFPolicy
from rlvr.policy.logprobs import token_logprobs
from rlvr.policy.prefix import group_order, prompt_lengths, shared_prompt_logprobs
from tests.unit.policy.test_hf_policy import SAMPLING, SGD, pg_loss


def grpo_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """9 right-padded rows: prompts A (3 tokens), B (5), C (4), three rows each, interleaved B, A, C, A, ...;
    responses of 0..6 tokens (row 4 has none); advantages per row; row 7 masked out."""
    g = torch.Generator().manual_seed(seed)
    prompts = {"A": [5, 6, 7], "B": [8, 9, 10, 11, 12], "C": [13, 5, 9, 20]}
    order = ["B", "A", "C", "A", "B", "C", "C", "A", "B"]
    responses = [torch.randint(4, 21, (n,), generator=g).tolist() for n in (6, 2, 4, 5, 0, 1, 6, 3, 2)]
    rows = [prompts[k] + r for k, r in zip(order, responses)]
    seq = max(map(len, rows))
    input_ids = torch.zeros((9, seq), dtype=torch.long)
    token_mask = torch.zeros((9, seq))
    for i, (k, row) in enumerate(zip(order, rows)):
        input_ids[i, : len(row)] = torch.tensor(row)
        token_mask[i, len(prompts[k]) : len(row)] = 1
    sample_mask = torch.ones(9)
    sample_mask[7] = 0
    return {
        "input_ids": input_ids,
        "attention_mask": (torch.arange(seq) < torch.tensor([len(r) for r in rows])[:, None]).long(),
        "token_mask": token_mask,
        "sample_mask": sample_mask,
        "advantages": torch.randn(9, 1, generator=g).expand(9, seq).clone(),
    }


def test_prompt_lengths_and_group_order():
    """Prompt lengths come from the first response token (all columns when there is none); rows of one prompt
    become neighbours in order of first appearance; distinct prompts (or left padding) give None."""
    batch = grpo_batch()
    plen = prompt_lengths(batch["token_mask"], batch["attention_mask"])
    assert plen.tolist() == [5, 3, 4, 3, 5, 4, 4, 3, 5]
    order = group_order(batch["input_ids"], batch["attention_mask"], plen)
    assert order.tolist() == [0, 4, 8, 1, 3, 7, 2, 5, 6]
    assert group_order(batch["input_ids"][:3], batch["attention_mask"][:3], plen[:3]) is None
    assert group_order(batch["input_ids"], batch["attention_mask"].flip(-1), plen) is None


@pytest.mark.parametrize("sampling", [{"temperature": 0.7}, SAMPLING], ids=["temperature", "filtered"])
def test_shared_prompt_logprobs_equal_a_plain_forward_at_response_positions(model, sampling):
    """Log-probs (top-k/top-p ``-inf`` included) equal token_logprobs of one full forward on every response token;
    0 elsewhere; the prompts ran as one batch of 3 rows."""
    batch = grpo_batch()
    plen = prompt_lengths(batch["token_mask"], batch["attention_mask"])
    sizes: list[tuple[int, int]] = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kw: sizes.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        with torch.no_grad():
            shared = shared_prompt_logprobs(model, batch["input_ids"], batch["attention_mask"], plen, sampling=sampling)
    finally:
        hook.remove()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    plain = token_logprobs(logits, batch["input_ids"], **sampling)
    response = batch["token_mask"].bool()
    assert sizes == [(3, 5), (9, 6)]  # 3 distinct prompts (widest 5), then 9 responses (longest 6)
    assert torch.equal(torch.isneginf(shared[response]), torch.isneginf(plain[response]))
    finite = response & ~torch.isneginf(plain)
    assert_close(shared[finite], plain[finite], atol=1e-5, rtol=1e-5)
    assert (shared[~response] == 0).all()


@pytest.mark.parametrize("sampling", [{}, SAMPLING], ids=["unfiltered", "filtered"])
def test_training_with_shared_prompts_takes_the_plain_step(make_model, sampling):
    """Micro-batches of 3 (one prompt each) with shared prompts give the loss, metrics, gradient norm and SGD
    update of the plain forward over every row."""
    shared, plain = make_model(seed=0), make_model(seed=0)
    sampling = {"temperature": 0.7, **sampling}
    p_shared = HFPolicy(shared, optimizer=SGD, **sampling)
    p_plain = HFPolicy(plain, optimizer=SGD, **sampling)
    p_plain.share_prompts = False
    m_shared = p_shared.train(grpo_batch(), pg_loss, global_batch_size=9, micro_batch_size=3)
    m_plain = p_plain.train(grpo_batch(), pg_loss, global_batch_size=9, micro_batch_size=3)
    assert p_shared.share_prompts and m_shared.keys() == m_plain.keys()
    for key in m_plain:
        assert_close(torch.tensor(m_shared[key]), torch.tensor(m_plain[key]), rtol=1e-5, atol=1e-6, msg=key)
    for (name, p), q in zip(shared.named_parameters(), plain.parameters()):
        assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
