"""Training log-probs of a micro-batch packed without padding (``policy.sequence_packing.enabled``).

A right-padded micro-batch ``[b, S]`` runs the model over ``b x S`` positions although most rows end well before
``S``, and GRPO's rows repeat their prompt ``num_generations_per_prompt`` times. Packed, the micro-batch becomes
a few rows of *units*: a unit is one distinct prompt followed by the responses of the micro-batch's rows that
share it, each response placed right after the previous one. A 4-D attention mask lets a response token see its
own prompt and the earlier tokens of its own response only, and position ids restart at the prompt length for
every response, so each token is scored exactly as in its own padded row (the model is causal and attends only
through the mask). Units go into rows first-fit by decreasing length, a row holding at most the longest unit's
tokens, so the attention work stays within what the longest unit needs.

The work is then the distinct prompt tokens plus the response tokens (plus the rows' tail padding), against
``b x S`` unpacked. Values and gradients equal the plain forward's up to float rounding
(``tests/unit/policy/test_packing.py``); only response positions get log-probs (0 elsewhere), which is all
the loss reads. Needs right padding and an attention implementation that takes a 4-D additive mask (``sdpa``,
``eager``): :func:`can_pack`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from rlvr.policy.logprobs import process_logits

PACKABLE_ATTENTION = ("sdpa", "eager")  # implementations that read a custom 4-D additive mask


def can_pack(model: torch.nn.Module) -> bool:
    """Whether ``model``'s attention honours a custom 4-D mask (flash-attention kernels take none)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) in PACKABLE_ATTENTION


def is_right_padded(attention_mask: torch.Tensor) -> bool:
    """Whether every row of ``attention_mask[B, S]`` is real tokens first, then padding only."""
    return not bool((attention_mask[:, 1:] > attention_mask[:, :-1]).any())


class _Layout:
    """Where every token of a packed micro-batch goes: ``[n, T]`` ids, positions, segments, and the columns
    that predict each response token."""

    def __init__(self, input_ids: torch.Tensor, prompt_len: torch.Tensor, response_len: torch.Tensor):
        rows_ids = input_ids.tolist()
        p_len, r_len = prompt_len.tolist(), response_len.tolist()
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ids, n) in enumerate(zip(rows_ids, p_len)):
            groups.setdefault(tuple(ids[:n]), []).append(i)
        units = [(prompt, members, len(prompt) + sum(r_len[i] for i in members)) for prompt, members in groups.items()]
        width = max(size for _, _, size in units)
        bins: list[list[tuple[tuple[int, ...], list[int]]]] = []
        used: list[int] = []
        for prompt, members, size in sorted(units, key=lambda u: -u[2]):  # first fit, longest first
            k = next((k for k, u in enumerate(used) if u + size <= width), len(bins))
            if k == len(bins):
                bins.append([])
                used.append(0)
            bins[k].append((prompt, members))
            used[k] += size
        self.shape = (len(bins), width)
        self.tokens: list[list[int]] = [[] for _ in bins]
        self.positions: list[list[int]] = [[] for _ in bins]
        self.segment: list[list[int]] = [[] for _ in bins]  # who a token is: prompt unit or response row
        self.reads: list[list[int]] = [[] for _ in bins]  # the prompt segment a token may also attend to
        self.targets: list[tuple[int, int, int, int]] = []  # (row, column in row, pack row, predicting column)
        for k, contents in enumerate(bins):
            for prompt, members in contents:
                self._place_unit(k, prompt, members, rows_ids, p_len, r_len)

    def _place_unit(
        self, k: int, prompt: tuple[int, ...], members: list[int], rows_ids: list[list[int]], p_len, r_len
    ) -> None:
        tokens, positions, segment, reads = self.tokens[k], self.positions[k], self.segment[k], self.reads[k]
        prompt_segment = -1 - members[0]  # negative ids for prompts, row indices for responses
        tokens.extend(prompt)
        positions.extend(range(len(prompt)))
        segment.extend([prompt_segment] * len(prompt))
        reads.extend([prompt_segment] * len(prompt))
        last_prompt_column = len(tokens) - 1
        for i in members:
            start = len(tokens)
            tokens.extend(rows_ids[i][p_len[i] : p_len[i] + r_len[i]])
            positions.extend(range(p_len[i], p_len[i] + r_len[i]))
            segment.extend([i] * r_len[i])
            reads.extend([prompt_segment] * r_len[i])
            for j in range(r_len[i]):
                self.targets.append((i, p_len[i] + j, k, last_prompt_column if j == 0 else start + j - 1))

    def tensors(self, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``input_ids`` and ``position_ids`` ``[n, T]`` and the additive attention mask ``[n, 1, T, T]``."""
        n, width = self.shape
        ids = torch.zeros((n, width), dtype=torch.long)
        pos = torch.zeros((n, width), dtype=torch.long)
        seg = torch.arange(width).repeat(n, 1) + (1 << 40)  # padding: a segment of its own per column
        reads = seg.clone()
        for k in range(n):
            m = len(self.tokens[k])
            ids[k, :m] = torch.tensor(self.tokens[k])
            pos[k, :m] = torch.tensor(self.positions[k])
            seg[k, :m] = torch.tensor(self.segment[k])
            reads[k, :m] = torch.tensor(self.reads[k])
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        allowed = causal & ((seg[:, None, :] == seg[:, :, None]) | (seg[:, None, :] == reads[:, :, None]))
        mask = torch.zeros((n, 1, width, width), dtype=dtype)
        mask.masked_fill_(~allowed.unsqueeze(1), torch.finfo(dtype).min)
        return ids.to(device), pos.to(device), mask.to(device)


def packed_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    prompt_len: torch.Tensor,
    *,
    sampling: Mapping[str, Any],
) -> torch.Tensor:
    """Processed log-probs ``[b, S]`` (float32) of the response tokens of right-padded ``input_ids[b, S]``.

    ``prompt_len[b]``: prompt columns of each row; ``sampling``: the
    :func:`~rlvr.policy.logprobs.process_logits` keywords. Positions outside the responses are 0; a row without
    response tokens contributes none. Same contract as :func:`rlvr.policy.prefix.shared_prompt_logprobs`.
    """
    b, seq = input_ids.shape
    out = torch.zeros((b, seq), dtype=torch.float32, device=input_ids.device)
    layout = _Layout(input_ids, prompt_len, attention_mask.sum(-1) - prompt_len)
    if not layout.targets:
        return out
    dtype = next(model.parameters()).dtype
    ids, positions, mask = layout.tensors(input_ids.device, dtype)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    row, column, pack, predicting = (
        torch.tensor(c, dtype=torch.long, device=input_ids.device) for c in zip(*layout.targets)
    )
    processed = process_logits(logits[pack, predicting], **sampling)
    picked = processed.log_softmax(-1).gather(-1, input_ids[row, column].unsqueeze(-1)).squeeze(-1)
    return out.index_put((row, column), picked)
