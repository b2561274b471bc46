"""Llama family (``LlamaForCausalLM``): GQA attention, SwiGLU MLP, RMSNorm, RoPE, tied or untied embeddings.

Optional tensors follow the HF config: ``attention_bias`` adds biases to q/k/v *and* o_proj, ``mlp_bias`` to
gate/up/down.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .compute import Compute, llama_like
from .table import Family, ModelDims, Rule

_L = "model.layers.{i}"
_M = "decoder.layers.{i}"

RULES: tuple[Rule, ...] = (
    Rule("embedding.word_embeddings.weight", ("model.embed_tokens.weight",)),
    Rule(f"{_M}.self_attention.linear_qkv.layer_norm_weight", (f"{_L}.input_layernorm.weight",)),
    Rule(
        f"{_M}.self_attention.linear_qkv.weight",
        (f"{_L}.self_attn.q_proj.weight", f"{_L}.self_attn.k_proj.weight", f"{_L}.self_attn.v_proj.weight"),
        "qkv",
    ),
    Rule(
        f"{_M}.self_attention.linear_qkv.bias",
        (f"{_L}.self_attn.q_proj.bias", f"{_L}.self_attn.k_proj.bias", f"{_L}.self_attn.v_proj.bias"),
        "qkv",
        when="qkv_bias",
    ),
    Rule(f"{_M}.self_attention.linear_proj.weight", (f"{_L}.self_attn.o_proj.weight",)),
    Rule(f"{_M}.self_attention.linear_proj.bias", (f"{_L}.self_attn.o_proj.bias",), when="proj_bias"),
    Rule(f"{_M}.mlp.linear_fc1.layer_norm_weight", (f"{_L}.post_attention_layernorm.weight",)),
    Rule(f"{_M}.mlp.linear_fc1.weight", (f"{_L}.mlp.gate_proj.weight", f"{_L}.mlp.up_proj.weight"), "gate_up"),
    Rule(
        f"{_M}.mlp.linear_fc1.bias", (f"{_L}.mlp.gate_proj.bias", f"{_L}.mlp.up_proj.bias"), "gate_up", when="mlp_bias"
    ),
    Rule(f"{_M}.mlp.linear_fc2.weight", (f"{_L}.mlp.down_proj.weight",)),
    Rule(f"{_M}.mlp.linear_fc2.bias", (f"{_L}.mlp.down_proj.bias",), when="mlp_bias"),
    Rule("decoder.final_layernorm.weight", ("model.norm.weight",)),
    Rule("output_layer.weight", ("lm_head.weight",), when="untied"),
)


def read_common_dims(cfg: Mapping[str, Any], *, qkv_bias: bool, proj_bias: bool, mlp_bias: bool) -> ModelDims:
    """Sizes shared by Llama-like configs; ``head_dim`` defaults to ``hidden_size / num_attention_heads``."""
    heads = int(cfg["num_attention_heads"])
    return ModelDims(
        num_layers=int(cfg["num_hidden_layers"]),
        hidden_size=int(cfg["hidden_size"]),
        ffn_hidden_size=int(cfg["intermediate_size"]),
        num_heads=heads,
        num_query_groups=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
        vocab_size=int(cfg["vocab_size"]),
        tied=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=qkv_bias,
        proj_bias=proj_bias,
        mlp_bias=mlp_bias,
    )


def read_dims(cfg: Mapping[str, Any]) -> ModelDims:
    """Llama: ``attention_bias`` covers q/k/v and o_proj; ``mlp_bias`` covers the three MLP projections."""
    attention_bias = bool(cfg.get("attention_bias", False))
    return read_common_dims(
        cfg, qkv_bias=attention_bias, proj_bias=attention_bias, mlp_bias=bool(cfg.get("mlp_bias", False))
    )


def read_compute(cfg: Mapping[str, Any], source: str) -> Compute:
    """Llama: full causal attention in every layer."""
    return llama_like({k: v for k, v in cfg.items() if k != "layer_types"}, source)


FAMILY = Family(
    name="llama",
    architectures=("LlamaForCausalLM",),
    model_types=("llama",),
    rules=RULES,
    read_dims=read_dims,
    tied_alias=("lm_head.weight", "model.embed_tokens.weight"),
    read_compute=read_compute,
)
