"""Training log-probs with each distinct prompt computed once per micro-batch (GRPO's shared prompts).

GRPO samples ``num_generations_per_prompt`` responses per prompt, so a micro-batch holds each prompt several
times. A plain forward runs the model over every copy; here the prompts run once, left-padded, with gradients
and a KV cache; the cache is gathered per row (an index, so in backward each prompt receives the summed
gradient of its rows), and the responses run on top of it, right-padded to the longest response of the
micro-batch. The log-prob of a row's first response token comes from its prompt's last position.

Only response positions get log-probs (0 elsewhere); the loss reads no others (their ``token_mask`` is 0).
Values and gradients equal the plain forward's up to rounding: the model is causal, so a prompt position's
state does not depend on what follows it, and the KV-cache path is the one generation already relies on.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch

from rlvr.policy.logprobs import process_logits


def prompt_lengths(token_mask: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``[B]``: columns before the first response token (``token_mask > 0``); a row with none is all prompt."""
    has_response = token_mask.bool().any(-1)
    first = token_mask.bool().int().argmax(-1)
    return torch.where(has_response, first, attention_mask.sum(-1))


def group_order(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: torch.Tensor) -> torch.Tensor | None:
    """Row order ``[B]`` that puts the rows of each prompt next to each other (first appearance first), or None
    where sharing does not pay or does not apply: fewer than two rows per distinct prompt, or left padding."""
    if bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any()):
        return None  # a row with padding before a real token: not the right-padded layout assumed here
    prompts = _prompts(input_ids, prompt_len)
    first: dict[tuple[int, ...], int] = {}
    keys = [first.setdefault(p, i) for i, p in enumerate(prompts)]
    if len(first) * 2 > len(prompts):
        return None
    return torch.argsort(torch.tensor(keys), stable=True).to(input_ids.device)


def shared_prompt_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: torch.Tensor,
    *,
    sampling: Mapping[str, Any],
) -> torch.Tensor:
    """Processed log-probs ``[b, S]`` (float32) of the response tokens of right-padded ``input_ids[b, S]``.

    ``prompt_len[b]``: prompt columns of each row (:func:`prompt_lengths`); ``sampling``: the
    :func:`~rlvr.policy.logprobs.process_logits` keywords. Positions outside the responses are 0. Padding
    columns hold token 0 (masked, so any valid id does).
    """
    b, seq = input_ids.shape
    prompts = _prompts(input_ids, prompt_len)
    first: dict[tuple[int, ...], int] = {}
    source = [first.setdefault(p, i) for i, p in enumerate(prompts)]
    distinct = sorted(set(source))
    gather = torch.tensor([distinct.index(i) for i in source], dtype=torch.long, device=input_ids.device)
    width = max(len(prompts[i]) for i in distinct)
    p_ids = input_ids.new_zeros((len(distinct), width))
    p_mask = torch.zeros_like(p_ids)
    for k, i in enumerate(distinct):
        n = len(prompts[i])
        p_ids[k, width - n :], p_mask[k, width - n :] = input_ids[i, :n], 1
    out = model(
        input_ids=p_ids,
        attention_mask=p_mask,
        position_ids=(p_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
    )
    cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    cache.batch_select_indices(gather)
    r_len = attention_mask.sum(-1) - prompt_len
    r_width = max(int(r_len.max()), 1)
    offsets = torch.arange(r_width, device=input_ids.device)
    valid = offsets < r_len[:, None]
    columns = (prompt_len[:, None] + offsets).clamp(max=seq - 1)
    r_ids = torch.where(valid, input_ids.gather(1, columns), torch.zeros_like(columns))
    r_out = model(
        input_ids=r_ids,
        attention_mask=torch.cat([p_mask[gather], valid.long()], dim=-1),
        position_ids=prompt_len[:, None] + offsets,
        use_cache=True,
        **{_cache_kwarg(model): cache},
    )
    # Row j of ``predicting`` scores response token j: the prompt's last state for j = 0, response j-1 after.
    predicting = torch.cat([out.logits[:, -1][gather].unsqueeze(1), r_out.logits[:, :-1]], dim=1)
    picked = process_logits(predicting, **sampling).log_softmax(-1).gather(-1, r_ids.unsqueeze(-1)).squeeze(-1)
    picked = torch.where(valid, picked, torch.zeros_like(picked))
    return torch.zeros((b, seq), dtype=picked.dtype, device=picked.device).scatter_add(1, columns, picked)


def _cache_kwarg(model: torch.nn.Module) -> str:
    """transformers 5.x renamed ``past_key_values`` to ``cache`` in later minor releases; accept both."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _prompts(input_ids: torch.Tensor, prompt_len: torch.Tensor) -> list[tuple[int, ...]]:
    return [tuple(row[:n].tolist()) for row, n in zip(input_ids, prompt_len.tolist())]
