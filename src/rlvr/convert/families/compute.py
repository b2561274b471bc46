"""What a family computes beyond its tensor names: the numerics the megatron-core model builder must reproduce.

:class:`Compute` is read from an HF config dict by each family and consumed by
:mod:`rlvr.convert.mcore_model`. Values megatron-core 0.16.1 cannot express with its own switches are
implemented in this package's runtime modules (:mod:`rlvr.convert.sdpa_attention`,
:mod:`rlvr.convert.gemma_modules`); anything neither can do is refused here with a :class:`CheckpointError`
naming the config key, so a model is never built computing something other than transformers does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rlvr.errors import CheckpointError

# HF ``hidden_act`` / ``hidden_activation`` names -> the activation of the gated MLP's first half.
ACTIVATIONS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh"}


@dataclass(frozen=True)
class Compute:
    """Numerics of one model. ``windows[i]`` is layer ``i``'s sliding window ``W`` (query ``q`` sees keys
    ``k`` with ``q - W < k <= q``, transformers' definition) or ``None`` for full causal attention.

    ``rope`` is the RoPE parameter dict of full-attention layers (``rope_theta``, ``rope_type``, ...);
    ``local_rope`` that of sliding layers when it differs (Gemma 3), else ``None``.
    """

    activation: str = "silu"
    windows: tuple[int | None, ...] = ()
    rope: Mapping[str, Any] | None = None
    local_rope: Mapping[str, Any] | None = None
    rotary_percent: float = 1.0
    norm_offset: bool = False  # RMSNorm scales by (1 + w) (Gemma), megatron's "zero-centred gamma"
    embed_scale: float | None = None  # embeddings multiplied by this (Gemma: sqrt(hidden_size))
    softmax_scale: float | None = None  # None: 1 / sqrt(head_dim)
    attn_softcap: float | None = None  # scores -> c * tanh(scores / c) before the mask and softmax
    final_softcap: float | None = None  # logits -> c * tanh(logits / c)


def activation(cfg: Mapping[str, Any], key: str, source: str) -> str:
    """The gated-MLP activation named by ``cfg[key]``; an unknown one is refused with the supported list."""
    name = cfg.get(key) or "silu"
    if name not in ACTIVATIONS:
        raise CheckpointError(f"{source}: {key}={name!r} is not supported; supported: {', '.join(sorted(ACTIVATIONS))}")
    return ACTIVATIONS[name]


def rope_params(cfg: Mapping[str, Any], layer_type: str | None = None) -> dict[str, Any]:
    """RoPE parameters from ``rope_parameters`` (transformers 5; per layer type for Gemma 3) over the legacy
    ``rope_theta`` / ``rope_scaling`` keys."""
    params = dict(cfg.get("rope_parameters") or {})
    if layer_type is not None and isinstance(params.get(layer_type), Mapping):
        params = dict(params[layer_type])
    merged = {**(cfg.get("rope_scaling") or {}), **params}
    merged.setdefault("rope_theta", cfg.get("rope_theta", 10000.0))
    return merged


def layer_windows(cfg: Mapping[str, Any], window: int | None, source: str) -> tuple[int | None, ...]:
    """Per-layer windows from ``layer_types`` (``sliding_attention`` / ``full_attention``); without it every
    layer slides when ``window`` is set (Mistral, Phi-3)."""
    layers = int(cfg["num_hidden_layers"])
    types = cfg.get("layer_types")
    if window is not None and int(window) <= 0:
        raise CheckpointError(f"{source}: sliding_window={window} must be a positive number of tokens")
    if not types:
        return (None if window is None else int(window),) * layers
    if len(types) != layers:
        raise CheckpointError(f"{source}: layer_types has {len(types)} entries for num_hidden_layers={layers}")
    unknown = sorted({t for t in types if t not in ("sliding_attention", "full_attention")})
    if unknown:
        raise CheckpointError(
            f"{source}: layer_types {unknown} are not supported; supported: sliding_attention, full_attention"
        )
    if window is None and "sliding_attention" in types:
        raise CheckpointError(f"{source}: layer_types has sliding_attention layers but sliding_window is null")
    return tuple(int(window) if t == "sliding_attention" else None for t in types)


def positive_or_none(cfg: Mapping[str, Any], key: str, source: str) -> float | None:
    """A soft-capping value: ``None`` (off) or a positive float."""
    value = cfg.get(key)
    if value is None:
        return None
    if float(value) <= 0:
        raise CheckpointError(f"{source}: {key}={value} must be positive or null")
    return float(value)


def whole_rotary(params: Mapping[str, Any], source: str) -> Mapping[str, Any]:
    """``params`` unchanged; refuses partial RoPE, which only families that implement it (Phi-3) accept."""
    if float(params.get("partial_rotary_factor", 1.0)) != 1.0:
        raise CheckpointError(
            f"{source}: partial_rotary_factor={params['partial_rotary_factor']} (partial RoPE) is not supported "
            "for this architecture"
        )
    return params


def llama_like(cfg: Mapping[str, Any], source: str, window: int | None = None) -> Compute:
    """SwiGLU, RMSNorm, whole-head RoPE; ``window`` per :func:`layer_windows` (``None``: full attention)."""
    return Compute(
        activation=activation(cfg, "hidden_act", source),
        windows=layer_windows(cfg, window, source),
        rope=whole_rotary(rope_params(cfg), source),
    )
