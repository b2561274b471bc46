"""Build a megatron-core ``GPTModel`` from an HF config, and move states in and out of it.

The model uses megatron-core's local layer spec (no Transformer Engine) with :class:`SDPACoreAttention` as its
core attention, TP = PP = 1, and an unpadded vocabulary, so its state matches a ``checkpoint_megatron`` tensor
for tensor. It runs on CPU (with :mod:`rlvr.convert.cpu_shim`) and on GPU.

Names: the local spec keeps separate ``input_layernorm`` / ``pre_mlp_layernorm`` modules, which megatron-core
itself saves under Transformer Engine's fused names (the spec's ``sharded_state_dict_keys_map``). The states
exchanged here always use the fused names (``self_attention.linear_qkv.layer_norm_weight``,
``mlp.linear_fc1.layer_norm_weight``), the names of :mod:`rlvr.convert.families`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from rlvr.errors import CheckpointError

from .families.compute import Compute
from .mcore_layers import OffsetRMSNorm, add_embedding_scale, add_final_softcap, local_rope_attention, post_norm_linear
from .megatron_runtime import ensure_megatron_runtime
from .sdpa_attention import core_attention_for
from .state_mapping import resolve_family

# Local-spec module names -> the fused names used in checkpoints (inside ``decoder.layers.N.``).
_LOCAL_TO_FUSED = {
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}
_ACTIVATIONS = {"silu": F.silu, "gelu_tanh": functools.partial(F.gelu, approximate="tanh")}
# megatron-core's llama3 frequency scaling has these three fixed (RotaryEmbedding._apply_scaling).
_MCORE_LLAMA3 = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def _rope_settings(params: Mapping[str, Any], rotary_percent: float, source: str) -> dict[str, Any]:
    """GPTModel RoPE keyword arguments from a family's RoPE parameter dict (see ``families.compute``)."""
    settings: dict[str, Any] = {
        "rotary_base": float(params.get("rope_theta", 10000.0)),
        "rotary_percent": rotary_percent,
    }
    rope_type = params.get("rope_type") or params.get("type") or "default"
    if rope_type == "default":
        return settings
    if rope_type == "linear":
        # transformers divides inv_freq by the factor; megatron divides the positions: the same angles.
        return {**settings, "seq_len_interpolation_factor": float(params["factor"])}
    if rope_type == "llama3":
        differing = {k: params.get(k) for k, v in _MCORE_LLAMA3.items() if float(params.get(k, v)) != v}
        if differing:
            raise CheckpointError(
                f"{source}: llama3 RoPE scaling with {differing} differs from megatron-core's fixed "
                f"{_MCORE_LLAMA3}; this model cannot be built as a GPTModel"
            )
        return {**settings, "rope_scaling": True, "rope_scaling_factor": float(params["factor"])}
    raise CheckpointError(f"{source}: RoPE type {rope_type!r} is not supported (known: default, linear, llama3)")


def _check_buildable(dims: Any, compute: Compute, source: str) -> None:
    """Refuse configs whose computation the GPTModel would silently get wrong."""
    if dims.proj_bias != dims.mlp_bias:
        raise CheckpointError(
            f"{source}: attention output bias={dims.proj_bias} but MLP bias={dims.mlp_bias}; megatron-core has "
            "one switch (add_bias_linear) for both"
        )
    if dims.post_norms and (dims.proj_bias or dims.mlp_bias or not compute.norm_offset):
        # The post-norm linear adds Gemma's (1 + w) norm after a bias-free projection; nothing else uses it.
        raise CheckpointError(f"{source}: post-norms are supported only as in Gemma (no output biases, (1 + w) norms)")
    if compute.local_rope is not None:
        local_type = compute.local_rope.get("rope_type") or "default"
        if local_type != "default":
            raise CheckpointError(f"{source}: sliding layers' RoPE type {local_type!r} is not supported (default only)")


def check_buildable(hf_config: Mapping[str, Any], *, source: str = "HF config") -> tuple[Any, Compute]:
    """The sizes and numerics of ``hf_config`` if :func:`build_gpt_model` can reproduce them, else a
    :class:`CheckpointError` naming the config key. Imports neither megatron-core nor transformers."""
    family, dims = resolve_family(hf_config, source=source)
    compute = family.read_compute(hf_config, source)
    _check_buildable(dims, compute, source)
    _rope_settings(compute.rope or {}, compute.rotary_percent, source)
    return dims, compute


def transformer_config_from_hf(hf_config: Mapping[str, Any], *, dtype: torch.dtype = torch.float32) -> Any:
    """The ``TransformerConfig`` of an HF config (dropouts as in HF, fusions off: they need CUDA)."""
    from megatron.core.transformer import TransformerConfig

    dims, compute = check_buildable(hf_config)
    wanted = dict(
        num_layers=dims.num_layers,
        hidden_size=dims.hidden_size,
        ffn_hidden_size=dims.ffn_hidden_size,
        num_attention_heads=dims.num_heads,
        num_query_groups=dims.num_query_groups,
        kv_channels=dims.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=float(hf_config.get("rms_norm_eps", 1e-6)),
        gated_linear_unit=True,
        activation_func=_ACTIVATIONS[compute.activation],
        add_bias_linear=dims.proj_bias,
        add_qkv_bias=dims.qkv_bias,
        qk_layernorm=dims.qk_norm,
        softmax_scale=compute.softmax_scale,
        hidden_dropout=0.0,
        attention_dropout=float(hf_config.get("attention_dropout", 0.0) or 0.0),
        init_method_std=float(hf_config.get("initializer_range", 0.02)),
        bias_dropout_fusion=False,
        bias_activation_fusion=False,
        apply_rope_fusion=False,
        masked_softmax_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        use_cpu_initialization=True,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
    )
    # Newer megatron-core versions drop or rename switches; pass only the fields this version has.
    known = {f.name for f in dataclasses.fields(TransformerConfig)}
    return TransformerConfig(**{k: v for k, v in wanted.items() if k in known})


def _block_spec(dims: Any, compute: Compute) -> Any:
    """Per-layer local specs (each layer's window and soft-cap; Gemma's norms and local RoPE) and the final norm."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

    base = get_gpt_layer_local_spec(normalization="RMSNorm", qk_layernorm=dims.qk_norm)
    final_norm = OffsetRMSNorm if compute.norm_offset else base.submodules.input_layernorm
    layers = []
    for window in compute.windows:
        spec = copy.deepcopy(base)
        attention = spec.submodules.self_attention
        attention.submodules.core_attention = core_attention_for(window, compute.attn_softcap)
        if compute.norm_offset:
            spec.submodules.input_layernorm = spec.submodules.pre_mlp_layernorm = OffsetRMSNorm
            if dims.qk_norm:
                attention.submodules.q_layernorm = attention.submodules.k_layernorm = OffsetRMSNorm
        if dims.post_norms:
            attention.submodules.linear_proj = spec.submodules.mlp.submodules.linear_fc2 = post_norm_linear()
        if window is not None and compute.local_rope is not None:
            attention.module = local_rope_attention()
            attention.params = {**attention.params, "local_rotary_base": float(compute.local_rope["rope_theta"])}
        layers.append(spec)
    return TransformerBlockSubmodules(layer_specs=layers, layer_norm=final_norm)


def build_gpt_model(
    hf_config: Mapping[str, Any], *, dtype: torch.dtype = torch.float32, device: str | torch.device | None = None
) -> Any:
    """A randomly initialised ``GPTModel`` with the architecture of ``hf_config`` (a config dict).

    ``device`` defaults to CUDA when available, else CPU. Sets up a world-size-1 process group if none exists
    (see :func:`rlvr.convert.megatron_runtime.ensure_megatron_runtime`).
    """
    from megatron.core.models.gpt import GPTModel

    ensure_megatron_runtime()
    config = transformer_config_from_hf(hf_config, dtype=dtype)
    dims, compute = check_buildable(hf_config)
    model = GPTModel(
        config=config,
        transformer_layer_spec=_block_spec(dims, compute),
        vocab_size=dims.vocab_size,
        max_sequence_length=int(hf_config.get("max_position_embeddings", 4096)),
        position_embedding_type="rope",
        share_embeddings_and_output_weights=dims.tied,
        **_rope_settings(compute.rope or {}, compute.rotary_percent, "HF config"),
    )
    if compute.embed_scale is not None:
        add_embedding_scale(model, compute.embed_scale)
    if compute.final_softcap is not None:
        add_final_softcap(model, compute.final_softcap)
    device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device)


def _fused_name(local_name: str) -> str:
    """``decoder.layers.3.input_layernorm.weight`` -> ``...3.self_attention.linear_qkv.layer_norm_weight``."""
    for local, fused in _LOCAL_TO_FUSED.items():
        if local_name.startswith("decoder.layers.") and local_name.endswith("." + local):
            return local_name[: -len(local)] + fused
    return local_name


def _named_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters (and persistent tensor buffers) of ``model`` under checkpoint names; ``_extra_state`` dropped."""
    return {
        _fused_name(name): tensor
        for name, tensor in model.state_dict(keep_vars=True).items()
        if isinstance(tensor, torch.Tensor) and not name.endswith("_extra_state")
    }


def gpt_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under checkpoint names, detached (shares storage with the model)."""
    return {name: tensor.detach() for name, tensor in _named_weights(model).items()}


def load_state_into_gpt(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy a checkpoint-named state into ``model`` in place (casting dtype and device); every model tensor must
    be present with its exact shape, and no extra tensor may be given."""
    targets = _named_weights(model)
    missing = sorted(set(targets) - set(state))
    unexpected = sorted(k for k in set(state) - set(targets) if not k.endswith("_extra_state"))
    wrong = [
        f"{k} is {list(state[k].shape)}, expected {list(t.shape)}"
        for k, t in targets.items()
        if k in state and state[k].shape != t.shape
    ]
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"state does not fit the GPTModel: missing={missing[:8]}, unexpected={unexpected[:8]}, wrong={wrong[:8]}"
        )
    with torch.no_grad():
        for name, target in targets.items():
            target.copy_(state[name])


def gpt_logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Causal-LM logits ``[B, S, V]`` for token ids ``[B, S]`` (positions ``0..S-1``, no padding mask)."""
    positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0).expand_as(input_ids)
    return model(input_ids, positions, None)
