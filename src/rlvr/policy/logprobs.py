"""Per-token log-probabilities under the sampling distribution, shared by generation and training.

GRPO's importance ratios compare log-probabilities from the generator (``generation_logprobs``), from the
trainer before the update (``prev_logprobs``) and during the update. They only agree when every side applies
the same *processing* to the raw logits, in the same order as vLLM's sampler (``logprobs_mode:
processed_logprobs``):

1. temperature: ``z / T``;
2. top-k: keep the ``k`` largest logits (ties with the k-th value are kept), the rest become ``-inf``;
3. top-p (nucleus), on the distribution *renormalised after top-k*: sort ascending, drop every token whose
   ascending cumulative probability is ``<= 1 - p`` (the most likely token is always kept). Equivalently a token is
   kept iff the probability mass of the tokens ranked strictly above it is ``< p``.

The HF generation backend samples from :func:`process_logits` and the policy scores with :func:`token_logprobs`,
so the two are the same function of the logits. The reference policy and the KL term use temperature only
(:func:`token_logprobs_unfiltered`).

Alignment: a ``[B, S]`` log-prob tensor has ``lp[:, t] = log p(input_ids[:, t] | input_ids[:, :t])`` and
``lp[:, 0] = 0`` (nothing predicts the first token). A token removed by top-k/top-p gets ``-inf``; callers that
feed a loss use :func:`mask_filtered_tokens`, which zeroes such entries and drops them from the token mask (a
generated token can fall outside the trainer's filtered set when the two logits differ by rounding).

Precision: the log-softmax always runs in float32 (:func:`process_logits` upcasts), whatever the model's dtype.
Memory (``policy.logprob_chunk_size``): :func:`token_logprobs` materialises ``[B, S, V]`` float32 logits, 1.2 GB
for 2 x 1,000 tokens at a 150k vocabulary, plus as much again for the log-softmax saved for backward.
:func:`chunked_token_logprobs` starts from the final hidden states ``[B, S, H]`` and applies the output layer,
the processing and the log-softmax to ``chunk_size`` positions at a time, each chunk under activation
checkpointing when gradients are recorded, so at most one ``[B, chunk, V]`` block exists at any time, in the
forward and in the backward pass. Results and gradients equal the unchunked path's.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint


def process_logits(
    logits: torch.Tensor, *, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = 1.0
) -> torch.Tensor:
    """Apply temperature, then top-k, then top-p to ``logits[..., V]``; returns float32 ``[..., V]``.

    Filtered entries are ``-inf``, so ``log_softmax`` of the result is the processed log-distribution that the
    sampler draws from. Gradients flow to the kept entries only.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    out = logits.float() / temperature
    vocab = out.shape[-1]
    if top_k is not None and 0 < top_k < vocab:
        kth = torch.topk(out.detach(), top_k, dim=-1).values[..., -1:]
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        out = out.masked_fill(_top_p_removed(out.detach(), top_p), float("-inf"))
    return out


def _top_p_removed(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Boolean ``[..., V]``: True where nucleus sampling with mass ``top_p`` drops the token.

    Ascending sort as in vLLM, so the comparison ``cumsum <= 1 - p`` rounds the same way as there.
    """
    sorted_logits, order = torch.sort(logits, dim=-1, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative <= 1.0 - top_p
    drop_sorted[..., -1] = False  # the most likely token always survives
    return torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)


def token_logprobs(
    logits: torch.Tensor,
    input_ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = 1.0,
) -> torch.Tensor:
    """Log-prob of each token under the processed distribution: ``logits[B, S, V]``, ``input_ids[B, S]`` -> ``[B, S]``.

    ``out[:, t] = log softmax(process(logits[:, t-1]))[input_ids[:, t]]`` for ``t >= 1`` and ``out[:, 0] = 0``;
    float32. Tokens outside the top-k/top-p set are ``-inf`` (see :func:`mask_filtered_tokens`).
    """
    if logits.dim() != 3 or input_ids.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits [B, S, V] and input_ids [B, S], got {tuple(logits.shape)} and {tuple(input_ids.shape)}"
        )
    processed = process_logits(logits[:, :-1], temperature=temperature, top_k=top_k, top_p=top_p)
    picked = processed.log_softmax(dim=-1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return torch.nn.functional.pad(picked, (1, 0), value=0.0)


def chunked_token_logprobs(
    hidden: torch.Tensor,
    head: Callable[[torch.Tensor], torch.Tensor],
    input_ids: torch.Tensor,
    *,
    chunk_size: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = 1.0,
) -> torch.Tensor:
    """:func:`token_logprobs` of ``head(hidden)`` without materialising the ``[B, S, V]`` logits.

    ``hidden[B, S, H]``: the final hidden states; ``head``: ``[B, c, H] -> [B, c, V]`` logits (the output layer);
    ``input_ids[B, S]``. Positions ``s .. s+chunk_size-1`` predicting tokens ``s+1 ..`` are one chunk; with
    gradients each chunk is checkpointed (its logits are recomputed in backward instead of being saved).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if hidden.dim() != 3 or input_ids.shape != hidden.shape[:2]:
        raise ValueError(
            f"expected hidden [B, S, H] and input_ids [B, S], got {tuple(hidden.shape)} and {tuple(input_ids.shape)}"
        )

    def picked(states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        processed = process_logits(head(states), temperature=temperature, top_k=top_k, top_p=top_p)
        return processed.log_softmax(dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)

    pieces = []
    predicting = hidden.shape[1] - 1  # the last position predicts nothing inside the sequence
    for start in range(0, predicting, chunk_size):
        stop = min(start + chunk_size, predicting)
        states, targets = hidden[:, start:stop], input_ids[:, start + 1 : stop + 1]
        if torch.is_grad_enabled():
            pieces.append(checkpoint(picked, states, targets, use_reentrant=False))
        else:
            pieces.append(picked(states, targets))
    out = torch.cat(pieces, dim=1) if pieces else hidden.new_zeros((hidden.shape[0], 0), dtype=torch.float32)
    return torch.nn.functional.pad(out, (1, 0), value=0.0)


def token_logprobs_unfiltered(
    logits: torch.Tensor, input_ids: torch.Tensor, *, temperature: float = 1.0
) -> torch.Tensor:
    """As :func:`token_logprobs` with temperature only (reference policy, KL term): ``[B, S, V]`` -> ``[B, S]``."""
    return token_logprobs(logits, input_ids, temperature=temperature, top_k=None, top_p=1.0)


def mask_filtered_tokens(logprobs: torch.Tensor, token_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero the ``-inf`` entries of ``logprobs[B, S]`` and drop them from ``token_mask[B, S]``.

    ``torch.where`` (not a multiplication) keeps both the values and the gradients finite: ``0 * -inf`` is NaN.
    Returns ``(logprobs, token_mask)`` with the mask in ``token_mask``'s dtype.
    """
    filtered = torch.isneginf(logprobs)
    cleaned = torch.where(filtered, torch.zeros_like(logprobs), logprobs)
    return cleaned, token_mask * (~filtered).to(token_mask.dtype)
