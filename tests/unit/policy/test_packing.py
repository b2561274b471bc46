"""Packed training log-probs (policy.sequence_packing): the result and the step equal the unpacked ones."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from rlvr.policy.hf import HFPolicy
from rlvr.policy.logprobs import token_logprobs
from rlvr.policy.packing import _Layout, can_pack, is_right_padded, packed_logprobs
from rlvr.policy.prefix import prompt_lengths
from tests.unit.policy.test_hf_policy import SAMPLING, SGD, pg_loss
from tests.unit.policy.test_prefix import grpo_batch


def _shapes_of_forwards(model: torch.nn.Module, run) -> tuple[list[tuple[int, ...]], torch.Tensor]:
    shapes: list[tuple[int, ...]] = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kw: shapes.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        return shapes, run()
    finally:
        hook.remove()


@pytest.mark.parametrize("sampling", [{"temperature": 0.7}, SAMPLING], ids=["temperature", "filtered"])
def test_packed_logprobs_equal_a_plain_forward_at_response_positions(model, sampling):
    """Every response token's log-prob (top-k/top-p ``-inf`` included) equals token_logprobs of a plain padded
    forward; 0 elsewhere. One forward of 3 packed rows, each a prompt once and its rows' responses (the longest
    unit, prompt C: 4 + 4 + 1 + 6 = 15 tokens), against 9 rows x 11 columns unpacked."""
    batch = grpo_batch()
    plen = prompt_lengths(batch["token_mask"], batch["attention_mask"])
    with torch.no_grad():
        shapes, packed = _shapes_of_forwards(
            model, lambda: packed_logprobs(model, batch["input_ids"], batch["attention_mask"], plen, sampling=sampling)
        )
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    plain = token_logprobs(logits, batch["input_ids"], **sampling)
    response = batch["token_mask"].bool()
    assert shapes == [(3, 15)]
    assert torch.equal(torch.isneginf(packed[response]), torch.isneginf(plain[response]))
    finite = response & ~torch.isneginf(plain)
    assert_close(packed[finite], plain[finite], atol=1e-5, rtol=1e-5)
    assert (packed[~response] == 0).all()


def test_packed_gradients_equal_the_plain_forward(make_model):
    """The gradient of a weighted sum of the response log-probs is the plain forward's (each shared prompt
    receives the summed gradient of its rows through the attention to it)."""
    batch = grpo_batch()
    plen = prompt_lengths(batch["token_mask"], batch["attention_mask"])
    weights = torch.randn(batch["input_ids"].shape, generator=torch.Generator().manual_seed(3))
    response = batch["token_mask"].bool()
    grads = []
    for pack in (True, False):
        model = make_model(seed=1)
        if pack:
            lp = packed_logprobs(model, batch["input_ids"], batch["attention_mask"], plen, sampling={})
        else:
            lp = token_logprobs(
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["input_ids"]
            )
        (torch.where(response, lp, torch.zeros_like(lp)) * weights).sum().backward()
        grads.append({name: p.grad for name, p in model.named_parameters()})
    for name, grad in grads[0].items():
        assert_close(grad, grads[1][name], rtol=1e-4, atol=1e-4, msg=name)  # gradients up to ~30


def test_bins_hold_at_most_the_longest_unit():
    """Units go first-fit longest first into rows of the longest unit's width (9): C (4 + 5 tokens) fills row 0,
    B (5 + 1) opens row 1 and A (3 prompt tokens, no response) fits after it."""
    prompts = {"A": [5, 6, 7], "B": [8, 9, 10, 11, 12], "C": [13, 5, 9, 20]}
    rows = [prompts["A"], prompts["C"] + [4] * 5, prompts["B"] + [4]]
    ids = torch.zeros((3, 9), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    plen = torch.tensor([3, 4, 5])
    layout = _Layout(ids, plen, (ids != 0).sum(-1) - plen)
    assert layout.shape == (2, 9)
    assert layout.tokens == [prompts["C"] + [4] * 5, prompts["B"] + [4] + prompts["A"]]
    assert layout.positions[1] == [0, 1, 2, 3, 4, 5, 0, 1, 2]
    assert not can_pack(torch.nn.Module())  # no config: no known attention implementation


def test_is_right_padded():
    assert is_right_padded(torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert not is_right_padded(torch.tensor([[0, 1, 1], [1, 1, 1]]))


@pytest.mark.parametrize("sampling", [{}, SAMPLING], ids=["unfiltered", "filtered"])
@pytest.mark.parametrize("micro_batch", [3, 9])
def test_training_with_packing_takes_the_unpacked_step(make_model, sampling, micro_batch):
    """Packed micro-batches give the loss, metrics, gradient norm and SGD update of the unpacked (shared-prompt)
    training pass, with one prompt or all three per micro-batch."""
    packed, unpacked = make_model(seed=0), make_model(seed=0)
    sampling = {"temperature": 0.7, **sampling}
    p_packed = HFPolicy(packed, optimizer=SGD, sequence_packing=True, **sampling)
    p_unpacked = HFPolicy(unpacked, optimizer=SGD, sequence_packing=False, **sampling)
    m_packed = p_packed.train(grpo_batch(), pg_loss, global_batch_size=9, micro_batch_size=micro_batch)
    m_unpacked = p_unpacked.train(grpo_batch(), pg_loss, global_batch_size=9, micro_batch_size=micro_batch)
    assert p_packed.pack and not p_unpacked.pack and m_packed.keys() == m_unpacked.keys()
    for key in m_unpacked:
        assert_close(torch.tensor(m_packed[key]), torch.tensor(m_unpacked[key]), rtol=1e-5, atol=1e-6, msg=key)
    for (name, p), q in zip(packed.named_parameters(), unpacked.parameters()):
        assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_packing_is_off_where_the_forward_differs(make_model):
    """Chunked log-probs and activation checkpointing keep the unpacked path (they run their own forward)."""
    assert not HFPolicy(make_model(seed=0), optimizer=SGD, sequence_packing=True, logprob_chunk_size=4).pack
    assert not HFPolicy(make_model(seed=0), optimizer=SGD, sequence_packing=True, activation_checkpointing=True).pack
