"""Core attention for megatron-core's ``SelfAttention`` built on ``torch.nn.functional.scaled_dot_product_attention``.

megatron-core's local ``DotProductAttention`` allocates its score buffer on ``torch.cuda.current_device()``
and relies on fused-softmax kernels; this module computes the same thing,
``softmax(q k^T * scale + mask) v`` per head, with PyTorch's SDPA, which runs on CPU and GPU alike. It is the
``core_attention`` of every model built by :func:`rlvr.convert.mcore_model.build_gpt_model`, so CPU and GPU runs
share one attention code path.

Shapes (megatron's sequence-first layout): query ``[sq, b, nq, d]``, key/value ``[sk, b, ng, d]`` with
``ng`` query groups; output ``[sq, b, nq * d]``. GQA repeats each K/V head for its ``nq / ng`` consecutive
query heads, the grouping that ``linear_qkv`` uses (see :mod:`rlvr.convert.fusion`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F


class SDPACoreAttention(torch.nn.Module):
    """Drop-in ``core_attention`` submodule (no parameters, no extra state)."""

    def __init__(
        self,
        *,
        config: Any,
        layer_number: int,
        attn_mask_type: Any,
        attention_type: str = "self",
        softmax_scale: float | None = None,
        **_unused: Any,  # cp_comm_type, pg_collection, and whatever newer megatron-core versions pass
    ) -> None:
        super().__init__()
        self.config = config
        self.layer_number = layer_number
        self.attn_mask_type = attn_mask_type
        self.softmax_scale = softmax_scale
        self.dropout_p = float(getattr(config, "attention_dropout", 0.0) or 0.0)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: torch.Tensor | None,
        attn_mask_type: Any = None,
        attention_bias: torch.Tensor | None = None,
        packed_seq_params: Any = None,
    ) -> torch.Tensor:
        """``attention_mask`` follows megatron's convention (bool, ``True`` = masked out, broadcastable to
        ``[b, nq, sq, sk]``); when it is ``None`` a causal mask is applied if the mask type is causal."""
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("SDPACoreAttention supports neither packed sequences nor an attention bias")
        groups = query.shape[2] // key.shape[2]
        if groups > 1:
            key = key.repeat_interleave(groups, dim=2)
            value = value.repeat_interleave(groups, dim=2)
        q, k, v = (x.permute(1, 2, 0, 3) for x in (query, key, value))  # [b, heads, s, d]
        mask_type = attn_mask_type if attn_mask_type is not None else self.attn_mask_type
        is_causal = attention_mask is None and "causal" in str(getattr(mask_type, "name", mask_type))
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=None if attention_mask is None else ~attention_mask.bool(),
            dropout_p=self.dropout_p if self.training else 0.0,
            is_causal=is_causal,
            scale=self.softmax_scale if self.softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1]),
        )
        sq, b = query.shape[0], query.shape[1]
        return out.permute(2, 0, 1, 3).reshape(sq, b, -1)
