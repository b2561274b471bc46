"""Qwen2 family (``Qwen2ForCausalLM``): Llama's layout plus q/k/v biases (always present), no o_proj/MLP biases.

Sliding-window attention (``use_sliding_window: true``) changes no tensor; the layers that slide are those of
``layer_types`` (transformers derives it from ``max_window_layers``: layers at or above it slide).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .compute import Compute, llama_like
from .llama import read_common_dims
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
    ),
    Rule(f"{_M}.self_attention.linear_proj.weight", (f"{_L}.self_attn.o_proj.weight",)),
    Rule(f"{_M}.mlp.linear_fc1.layer_norm_weight", (f"{_L}.post_attention_layernorm.weight",)),
    Rule(f"{_M}.mlp.linear_fc1.weight", (f"{_L}.mlp.gate_proj.weight", f"{_L}.mlp.up_proj.weight"), "gate_up"),
    Rule(f"{_M}.mlp.linear_fc2.weight", (f"{_L}.mlp.down_proj.weight",)),
    Rule("decoder.final_layernorm.weight", ("model.norm.weight",)),
    Rule("output_layer.weight", ("lm_head.weight",), when="untied"),
)


def read_dims(cfg: Mapping[str, Any]) -> ModelDims:
    """Qwen2: q/k/v always carry a bias; nothing else does."""
    return read_common_dims(cfg, qkv_bias=True, proj_bias=False, mlp_bias=False)


def qwen_window(cfg: Mapping[str, Any]) -> tuple[Mapping[str, Any], int | None]:
    """The config with ``layer_types`` filled in as transformers does, and the window (``None``: off)."""
    window = cfg.get("sliding_window") if cfg.get("use_sliding_window") else None
    if cfg.get("layer_types") or window is None:
        return cfg, window
    first = int(cfg.get("max_window_layers") or 0)
    types = ["sliding_attention" if i >= first else "full_attention" for i in range(int(cfg["num_hidden_layers"]))]
    return {**cfg, "layer_types": types}, window


def read_compute(cfg: Mapping[str, Any], source: str) -> Compute:
    """Qwen2: sliding windows only with ``use_sliding_window`` and only in the layers ``layer_types`` names."""
    filled, window = qwen_window(cfg)
    if window is None:
        filled = {k: v for k, v in filled.items() if k != "layer_types"}
    return llama_like(filled, source, window)


FAMILY = Family(
    name="qwen2",
    architectures=("Qwen2ForCausalLM",),
    model_types=("qwen2",),
    rules=RULES,
    read_dims=read_dims,
    tied_alias=("lm_head.weight", "model.embed_tokens.weight"),
    read_compute=read_compute,
)
