"""Phi-3 family (``Phi3ForCausalLM``): Llama's computation with HF-side fused projections.

HF keeps ``qkv_proj`` as plain ``[q; k; v]`` row blocks (regrouped per query group for megatron's
``linear_qkv``, kind ``qkv_packed``) and ``gate_up_proj`` as ``[gate; up]``, which is megatron's ``linear_fc1``
layout already (a copy). ``sliding_window`` (when not null) applies to every layer, as in Mistral.
``partial_rotary_factor`` < 1 (RoPE on the first channels of each head, the rest passed through) is megatron's
``rotary_percent``. ``longrope`` scaling (the 128k variants) has no megatron-core equivalent and is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlvr.errors import CheckpointError

from .compute import Compute, activation, layer_windows, rope_params
from .llama import read_common_dims
from .table import Family, ModelDims, Rule

_L = "model.layers.{i}"
_M = "decoder.layers.{i}"

RULES: tuple[Rule, ...] = (
    Rule("embedding.word_embeddings.weight", ("model.embed_tokens.weight",)),
    Rule(f"{_M}.self_attention.linear_qkv.layer_norm_weight", (f"{_L}.input_layernorm.weight",)),
    Rule(f"{_M}.self_attention.linear_qkv.weight", (f"{_L}.self_attn.qkv_proj.weight",), "qkv_packed"),
    Rule(f"{_M}.self_attention.linear_proj.weight", (f"{_L}.self_attn.o_proj.weight",)),
    Rule(f"{_M}.mlp.linear_fc1.layer_norm_weight", (f"{_L}.post_attention_layernorm.weight",)),
    Rule(f"{_M}.mlp.linear_fc1.weight", (f"{_L}.mlp.gate_up_proj.weight",)),
    Rule(f"{_M}.mlp.linear_fc2.weight", (f"{_L}.mlp.down_proj.weight",)),
    Rule("decoder.final_layernorm.weight", ("model.norm.weight",)),
    Rule("output_layer.weight", ("lm_head.weight",), when="untied"),
)


def read_dims(cfg: Mapping[str, Any]) -> ModelDims:
    """Phi-3 has no bias anywhere."""
    return read_common_dims(cfg, qkv_bias=False, proj_bias=False, mlp_bias=False)


def read_compute(cfg: Mapping[str, Any], source: str) -> Compute:
    """SwiGLU, every layer sliding by ``sliding_window`` when set, partial RoPE allowed."""
    rope = rope_params(cfg)
    factor = float(rope.get("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0)))
    if not 0.0 < factor <= 1.0:
        raise CheckpointError(f"{source}: partial_rotary_factor={factor} must be in (0, 1]")
    return Compute(
        activation=activation(cfg, "hidden_act", source),
        windows=layer_windows({k: v for k, v in cfg.items() if k != "layer_types"}, cfg.get("sliding_window"), source),
        rope=rope,
        rotary_percent=factor,
    )


FAMILY = Family(
    name="phi3",
    architectures=("Phi3ForCausalLM",),
    model_types=("phi3",),
    rules=RULES,
    read_dims=read_dims,
    tied_alias=("lm_head.weight", "model.embed_tokens.weight"),
    read_compute=read_compute,
)
