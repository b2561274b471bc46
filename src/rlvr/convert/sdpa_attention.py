"""Core attention for megatron-core's ``SelfAttention`` built on ``torch.nn.functional.scaled_dot_product_attention``.

megatron-core's local ``DotProductAttention`` allocates its score buffer on ``torch.cuda.current_device()``
and relies on fused-softmax kernels; this module computes the same thing,
``softmax(q k^T * scale + mask) v`` per head, with PyTorch's SDPA, which runs on CPU and GPU alike. It is the
``core_attention`` of every model built by :func:`rlvr.convert.mcore_model.build_gpt_model`, so CPU and GPU runs
share one attention code path.

Shapes (megatron's sequence-first layout): query ``[sq, b, nq, d]``, key/value ``[sk, b, ng, d]`` with
``ng`` query groups; output ``[sq, b, nq * d]``. GQA repeats each K/V head for its ``nq / ng`` consecutive
query heads, the grouping that ``linear_qkv`` uses (see :mod:`rlvr.convert.fusion`).

Two things megatron-core 0.16.1's local attention cannot express are implemented here, per layer:

- ``window``: sliding-window attention as transformers defines it (query ``q`` sees keys ``k`` with
  ``q - window < k <= q``). megatron-core's own ``window_size`` / ``window_attn_skip_freq`` reach its
  ``DotProductAttention`` and Transformer Engine only, neither of which this module's users run (the first needs
  CUDA, the second is not installed), so each layer's window is applied here.
- ``softcap``: Gemma 2's attention-logit soft-capping, ``scores -> c * tanh(scores / c)`` applied to the scaled
  scores before the mask and the softmax. SDPA has no hook for it, so those layers take an explicit
  ``softmax(q k^T)`` path with the softmax in fp32, as transformers' eager attention does.

:func:`core_attention_for` returns the per-layer builder that megatron's ``SelfAttention`` calls.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
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
        window: int | None = None,
        softcap: float | None = None,
        **_unused: Any,  # cp_comm_type, pg_collection, and whatever newer megatron-core versions pass
    ) -> None:
        super().__init__()
        self.window = window
        self.softcap = softcap
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
        causal = "causal" in str(getattr(mask_type, "name", mask_type))
        scale = self.softmax_scale if self.softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
        dropout = self.dropout_p if self.training else 0.0
        if attention_mask is None and self.window is None and self.softcap is None:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal, scale=scale)
        else:
            allowed = self._allowed(attention_mask, causal, q.shape[2], k.shape[2], q.device)
            if self.softcap is None:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout, scale=scale)
            else:
                out = _softcapped_attention(q, k, v, allowed, scale, self.softcap, dropout)
        sq, b = query.shape[0], query.shape[1]
        return out.permute(2, 0, 1, 3).reshape(sq, b, -1)

    def _allowed(
        self, attention_mask: torch.Tensor | None, causal: bool, sq: int, sk: int, device: torch.device
    ) -> torch.Tensor:
        """Bool ``[..., sq, sk]``, ``True`` where a query may attend: the given mask (or the causal one) and,
        with a window, only the last ``window`` positions. Query ``i`` sits at position ``i + sk - sq``."""
        q_pos = torch.arange(sq, device=device).unsqueeze(1) + (sk - sq)
        k_pos = torch.arange(sk, device=device).unsqueeze(0)
        if attention_mask is not None:
            allowed = ~attention_mask.bool()
        elif causal:
            allowed = k_pos <= q_pos
        else:
            allowed = torch.ones(sq, sk, dtype=torch.bool, device=device)
        if self.window is not None:
            allowed = allowed & (k_pos > q_pos - self.window)
        return allowed


def _softcapped_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor, scale: float, cap: float, dropout: float
) -> torch.Tensor:
    """``softmax(mask(c * tanh(q k^T * scale / c))) v`` for ``[b, heads, s, d]`` inputs, softmax in fp32."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale
    scores = torch.tanh(scores / cap) * cap
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    probs = F.dropout(probs, p=dropout, training=dropout > 0.0)
    return torch.matmul(probs, v)


def core_attention_for(window: int | None, softcap: float | None) -> Callable[..., SDPACoreAttention]:
    """The ``core_attention`` builder of one layer (megatron calls it with the usual keyword arguments)."""
    if window is None and softcap is None:
        return SDPACoreAttention
    return functools.partial(SDPACoreAttention, window=window, softcap=softcap)
