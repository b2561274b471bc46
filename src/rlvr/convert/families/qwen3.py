"""Qwen3 family (``Qwen3ForCausalLM``): Llama's layout plus per-head RMSNorm of queries and keys (QK-norm).

``q_norm`` / ``k_norm`` normalise each head's ``d`` channels before RoPE, which is megatron-core's
``qk_layernorm`` (``self_attention.q_layernorm`` / ``k_layernorm``). ``attention_bias`` adds biases to q/k/v
and o_proj as in Llama. Sliding windows follow Qwen2 (``use_sliding_window`` + ``layer_types``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from . import llama, qwen2
from .compute import Compute
from .table import Family, ModelDims, Rule

_L = "model.layers.{i}"
_M = "decoder.layers.{i}"

RULES: tuple[Rule, ...] = (
    *llama.RULES,
    Rule(f"{_M}.self_attention.q_layernorm.weight", (f"{_L}.self_attn.q_norm.weight",)),
    Rule(f"{_M}.self_attention.k_layernorm.weight", (f"{_L}.self_attn.k_norm.weight",)),
)


def read_dims(cfg: Mapping[str, Any]) -> ModelDims:
    """Llama's sizes and biases, with QK-norm."""
    return dataclasses.replace(llama.read_dims(cfg), qk_norm=True)


def read_compute(cfg: Mapping[str, Any], source: str) -> Compute:
    """As Qwen2: windows only with ``use_sliding_window``."""
    return qwen2.read_compute(cfg, source)


FAMILY = Family(
    name="qwen3",
    architectures=("Qwen3ForCausalLM",),
    model_types=("qwen3",),
    rules=RULES,
    read_dims=read_dims,
    tied_alias=("lm_head.weight", "model.embed_tokens.weight"),
    read_compute=read_compute,
)
