"""Hand-computed checks of the processed log-prob math shared by the sampler and the trainer."""

from __future__ import annotations

import math

import torch
from torch.testing import assert_close

from rlvr.policy.logprobs import (
    mask_filtered_tokens,
    process_logits,
    token_logprobs,
    token_logprobs_unfiltered,
)

NEG_INF = float("-inf")


def _one_step(logits_row: list[float], **kw) -> torch.Tensor:
    """Processed log-distribution of a single position, via token_logprobs over every vocab id."""
    vocab = len(logits_row)
    logits = torch.tensor(logits_row).repeat(vocab, 2, 1)  # [V, 2, V]: row v scores token v at position 1
    ids = torch.stack([torch.zeros(vocab, dtype=torch.long), torch.arange(vocab)], dim=1)
    return token_logprobs(logits, ids, **kw)[:, 1]


def test_temperature_only_matches_hand_softmax():
    """With T=2, lp = z/2 - logsumexp(z/2), computed by hand for z = [2, 0, -2]."""
    lp = _one_step([2.0, 0.0, -2.0], temperature=2.0)
    norm = math.log(math.e + 1 + math.exp(-1))
    assert_close(lp, torch.tensor([1 - norm, -norm, -1 - norm]))


def test_top_k_keeps_k_largest_and_renormalises():
    """top_k=2 on z=[2,1,0,-1]: tokens 0,1 get log(e^z / (e^2 + e^1)), the rest -inf."""
    lp = _one_step([2.0, 1.0, 0.0, -1.0], top_k=2)
    norm = math.log(math.exp(2) + math.exp(1))
    assert_close(lp, torch.tensor([2 - norm, 1 - norm, NEG_INF, NEG_INF]))


def test_top_k_keeps_ties_with_the_kth_value():
    """As in vLLM, every logit equal to the k-th largest survives: z=[1,1,0], k=1 keeps two tokens."""
    lp = _one_step([1.0, 1.0, 0.0], top_k=1)
    assert_close(lp, torch.tensor([math.log(0.5), math.log(0.5), NEG_INF]))


def test_top_p_keeps_the_smallest_nucleus():
    """p=[.5,.3,.15,.05], top_p=0.85 drops only the .05 token (cumulative mass above it is .95 >= .85)."""
    probs = [0.5, 0.3, 0.15, 0.05]
    lp = _one_step([math.log(p) for p in probs], top_p=0.85)
    assert_close(lp, torch.tensor([math.log(0.5 / 0.95), math.log(0.3 / 0.95), math.log(0.15 / 0.95), NEG_INF]))
    lp = _one_step([math.log(p) for p in probs], top_p=0.7)  # mass above token 1 is .5 < .7: tokens 0, 1 kept
    assert_close(lp, torch.tensor([math.log(0.5 / 0.8), math.log(0.3 / 0.8), NEG_INF, NEG_INF]))


def test_top_p_is_applied_after_top_k():
    """top_k=2 renormalises to [.625,.375]; top_p=0.6 on that keeps token 0 only (on the raw p it would keep 2)."""
    lp = _one_step([math.log(p) for p in (0.5, 0.3, 0.15, 0.05)], top_k=2, top_p=0.6)
    assert_close(lp, torch.tensor([0.0, NEG_INF, NEG_INF, NEG_INF]))


def test_temperature_is_applied_before_top_p():
    """T=0.5 squares p=[.5,.3,.15,.05] -> [.685,.247,.062,.007]; top_p=0.9 then keeps tokens 0, 1 only."""
    lp = _one_step([math.log(p) for p in (0.5, 0.3, 0.15, 0.05)], temperature=0.5, top_p=0.9)
    assert_close(lp, torch.tensor([math.log(0.25 / 0.34), math.log(0.09 / 0.34), NEG_INF, NEG_INF]))


def test_alignment_position_zero_and_shift():
    """lp[:, t] is scored by logits[:, t-1]; lp[:, 0] = 0; batches are independent."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    ids = torch.tensor([[3, 1, 4, 0], [2, 2, 0, 1]])
    lp = token_logprobs(logits, ids)
    expected = torch.zeros(2, 4)
    for b in range(2):
        for t in range(1, 4):
            expected[b, t] = torch.log_softmax(logits[b, t - 1], -1)[ids[b, t]]
    assert_close(lp, expected)


def test_unfiltered_variant_ignores_top_k_top_p_but_keeps_temperature():
    """token_logprobs_unfiltered(T) == token_logprobs(T, no filter) and differs from the filtered one."""
    torch.manual_seed(1)
    logits, ids = torch.randn(1, 6, 7), torch.randint(0, 7, (1, 6))
    unfiltered = token_logprobs_unfiltered(logits, ids, temperature=0.7)
    assert_close(unfiltered, token_logprobs(logits / 0.7, ids))
    assert torch.isfinite(unfiltered).all()
    assert not torch.equal(unfiltered, token_logprobs(logits, ids, temperature=0.7, top_k=2))


def test_process_logits_upcasts_and_off_values():
    """bf16 input gives float32 output; top_k None/<=0 and top_p 1.0 filter nothing."""
    z = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.bfloat16)
    out = process_logits(z, temperature=1.0, top_k=0, top_p=1.0)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_mask_filtered_tokens_zeroes_values_and_gradients():
    """-inf entries become 0 with a 0 gradient, are removed from the mask, and nothing is NaN."""
    logits = torch.tensor([[[3.0, 0.0, -3.0], [0.0, 3.0, -3.0], [0.0, 0.0, 0.0]]], requires_grad=True)
    ids = torch.tensor([[0, 2, 1]])  # token 2 at t=1 is outside top_k=2 of logits[:, 0]
    lp = token_logprobs(logits, ids, top_k=2)
    assert lp[0, 1] == NEG_INF
    cleaned, mask = mask_filtered_tokens(lp, torch.tensor([[0.0, 1.0, 1.0]]))
    assert_close(mask, torch.tensor([[0.0, 0.0, 1.0]]))
    assert cleaned[0, 1] == 0.0
    (cleaned * mask).sum().backward()
    assert torch.isfinite(logits.grad).all()
    assert_close(logits.grad[0, 0], torch.zeros(3))  # only the filtered token read these logits
    assert logits.grad[0, 1].abs().sum() > 0
