"""Gemma 2 (``Gemma2ForCausalLM``) and Gemma 3 text (``Gemma3ForCausalLM``) families.

Tensors: Llama's projections plus four norms per layer. ``input_layernorm`` / ``pre_feedforward_layernorm``
are the usual pre-norms (megatron's fused ``layer_norm_weight`` names); ``post_attention_layernorm`` /
``post_feedforward_layernorm`` normalise the attention and MLP outputs before each residual add, which
megatron-core's ``TransformerLayer`` cannot express: they live on :class:`rlvr.convert.mcore_layers`'s
post-norm linear as ``linear_proj.post_layernorm`` / ``linear_fc2.post_layernorm`` (Megatron-Bridge's names).
Gemma 3 adds per-head ``q_norm`` / ``k_norm`` (megatron's ``q_layernorm`` / ``k_layernorm``).

Numerics (:class:`~.compute.Compute`), none of which megatron-core 0.16.1's local spec has a switch for except
the softmax scale: RMSNorm scales by ``(1 + w)`` in fp32, embeddings are multiplied by ``sqrt(hidden_size)``,
scores are scaled by ``query_pre_attn_scalar ** -0.5``, ``attn_logit_softcapping`` / ``final_logit_softcapping``
soft-cap attention scores and logits (Gemma 2 sets both; Gemma 3 neither, and transformers' Gemma 3 ignores
``attn_logit_softcapping``, so a non-null value is refused there), the MLP is GeGLU
(``gelu_pytorch_tanh``), and ``layer_types`` says which layers slide by ``sliding_window``. Gemma 3's sliding
layers rotate with their own RoPE (``rope_parameters["sliding_attention"]``, 10k) and the full ones with
``rope_parameters["full_attention"]`` (1M, linear scaling in the larger models).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rlvr.errors import CheckpointError

from . import llama
from .compute import Compute, activation, layer_windows, positive_or_none, rope_params, whole_rotary
from .table import Family, ModelDims, Rule

_L = "model.layers.{i}"
_M = "decoder.layers.{i}"

_NORM_RULES: tuple[Rule, ...] = (
    Rule(f"{_M}.self_attention.linear_proj.post_layernorm.weight", (f"{_L}.post_attention_layernorm.weight",)),
    Rule(f"{_M}.mlp.linear_fc1.layer_norm_weight", (f"{_L}.pre_feedforward_layernorm.weight",)),
    Rule(f"{_M}.mlp.linear_fc2.post_layernorm.weight", (f"{_L}.post_feedforward_layernorm.weight",)),
)
# Llama's rows, except that post_attention_layernorm is a post-norm here (pre_feedforward is the MLP pre-norm).
GEMMA2_RULES: tuple[Rule, ...] = (
    *(r for r in llama.RULES if r.hf != (f"{_L}.post_attention_layernorm.weight",)),
    *_NORM_RULES,
)
GEMMA3_RULES: tuple[Rule, ...] = (
    *GEMMA2_RULES,
    Rule(f"{_M}.self_attention.q_layernorm.weight", (f"{_L}.self_attn.q_norm.weight",)),
    Rule(f"{_M}.self_attention.k_layernorm.weight", (f"{_L}.self_attn.k_norm.weight",)),
)


def read_gemma2_dims(cfg: Mapping[str, Any]) -> ModelDims:
    """``attention_bias`` covers q/k/v and o_proj, as in Llama; the MLP has no bias; post-norms always."""
    bias = bool(cfg.get("attention_bias", False))
    dims = llama.read_common_dims(cfg, qkv_bias=bias, proj_bias=bias, mlp_bias=False)
    return dataclasses.replace(dims, post_norms=True)


def read_gemma3_dims(cfg: Mapping[str, Any]) -> ModelDims:
    """Gemma 2's sizes with QK-norm."""
    return dataclasses.replace(read_gemma2_dims(cfg), qk_norm=True)


def _gemma_compute(cfg: Mapping[str, Any], source: str, rope: Mapping[str, Any]) -> Compute:
    """What Gemma 2 and 3 share; ``rope`` is the full-attention layers' RoPE."""
    if cfg.get("use_bidirectional_attention"):
        raise CheckpointError(f"{source}: use_bidirectional_attention=true is not a causal LM; only false is supported")
    scalar = float(cfg.get("query_pre_attn_scalar") or cfg.get("head_dim") or 0)
    if scalar <= 0:
        raise CheckpointError(f"{source}: query_pre_attn_scalar must be positive")
    return Compute(
        activation=activation(cfg, "hidden_activation", source),
        windows=layer_windows(cfg, cfg.get("sliding_window"), source),
        rope=whole_rotary(rope, source),
        norm_offset=True,
        embed_scale=float(cfg["hidden_size"]) ** 0.5,
        softmax_scale=scalar**-0.5,
        attn_softcap=positive_or_none(cfg, "attn_logit_softcapping", source),
        final_softcap=positive_or_none(cfg, "final_logit_softcapping", source),
    )


def read_gemma2_compute(cfg: Mapping[str, Any], source: str) -> Compute:
    """One RoPE for every layer."""
    return _gemma_compute(cfg, source, rope_params(cfg))


def read_gemma3_compute(cfg: Mapping[str, Any], source: str) -> Compute:
    """Per-layer-type RoPE (transformers 5 ``rope_parameters``, or legacy ``rope_local_base_freq``)."""
    nested = isinstance((cfg.get("rope_parameters") or {}).get("sliding_attention"), Mapping)
    if nested:
        local = rope_params(cfg, "sliding_attention")
    else:
        local = {"rope_type": "default", "rope_theta": float(cfg.get("rope_local_base_freq", 10000.0))}
    if cfg.get("attn_logit_softcapping") is not None:
        # transformers' Gemma3Attention reads this key but never passes it to the attention function, so the
        # reference computation ignores it; building it in would diverge, ignoring it would hide the setting.
        raise CheckpointError(
            f"{source}: attn_logit_softcapping={cfg['attn_logit_softcapping']} is ignored by transformers' Gemma 3; "
            "set it to null (Gemma 3 checkpoints have it null)"
        )
    compute = _gemma_compute(cfg, source, rope_params(cfg, "full_attention"))
    return dataclasses.replace(compute, local_rope=whole_rotary(local, source))


GEMMA2 = Family(
    name="gemma2",
    architectures=("Gemma2ForCausalLM",),
    model_types=("gemma2",),
    rules=GEMMA2_RULES,
    read_dims=read_gemma2_dims,
    tied_alias=("lm_head.weight", "model.embed_tokens.weight"),
    read_compute=read_gemma2_compute,
)
GEMMA3 = Family(
    name="gemma3",
    architectures=("Gemma3ForCausalLM",),
    model_types=("gemma3_text",),
    rules=GEMMA3_RULES,
    read_dims=read_gemma3_dims,
    tied_alias=("lm_head.weight", "model.embed_tokens.weight"),
    read_compute=read_gemma3_compute,
)
