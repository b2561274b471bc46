"""Micro-batches without padding waste for the training and log-prob passes.

A rollout is one right-padded ``[B, S]`` batch whose width ``S`` is its longest sample; cut into micro-batches as
it comes, every micro-batch runs the model over all ``S`` columns, although most of its rows end much earlier.
Two changes remove that waste without changing any result:

* **length order**: the rows of a global batch go into micro-batches shortest first (a stable sort by real
  length), so each micro-batch holds rows of similar length. The loss of a global batch is a sum over its rows
  divided by *global* counts (:mod:`rlvr.policy.hf`), so which rows share a micro-batch changes the gradient
  only by the order of a floating-point sum;
* **trimmed columns**: each micro-batch runs on its own width, the last column any of its rows uses (rounded up
  to ``policy.make_sequence_length_divisible_by``). The model is causal, so dropping trailing columns that hold
  only padding changes no logit of a real position; log-probs of the dropped columns are 0, as for padding.

There is no switch to turn the waste back on. The training pass orders rows by prompt instead when it shares
prompts (:mod:`rlvr.policy.prefix`); the column trim applies either way. NeMo-RL's ``policy.dynamic_batching``
(a token budget per micro-batch, i.e. a *varying* row count) is a different lever and stays refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def length_order(attention_mask: torch.Tensor) -> torch.Tensor:
    """Row indices ``[B]`` by ascending real length (``attention_mask[B, S]`` summed), ties in row order."""
    return torch.argsort(attention_mask.sum(-1), stable=True)


def used_width(attention_mask: torch.Tensor, multiple_of: int = 1) -> int:
    """Columns up to the last one that any row of ``attention_mask[b, S]`` uses, rounded up to ``multiple_of``
    (never past ``S``); at least 1."""
    used = attention_mask.bool().any(dim=0).nonzero()
    width = int(used.max()) + 1 if len(used) else 1
    width = -(-width // multiple_of) * multiple_of
    return min(width, attention_mask.shape[1])


def select_rows(data: Mapping[str, Any], index: torch.Tensor, total: int) -> dict[str, Any]:
    """Rows ``index`` of every tensor with ``total`` rows; other values pass through."""
    return {k: v[index] if _has_rows(v, total) else v for k, v in data.items()}


def trim_columns(data: Mapping[str, Any], width: int, seq: int) -> dict[str, Any]:
    """The first ``width`` columns of every ``[b, seq, ...]`` tensor; other values pass through."""
    return {
        k: v[:, :width] if isinstance(v, torch.Tensor) and v.dim() >= 2 and v.shape[1] == seq else v
        for k, v in data.items()
    }


def _has_rows(value: Any, total: int) -> bool:
    return isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == total
