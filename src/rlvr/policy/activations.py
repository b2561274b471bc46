"""Activation checkpointing of the policy's transformer layers (``policy.dtensor_cfg.activation_checkpointing``,
``policy.megatron_cfg.activation_checkpointing``).

Each decoder layer's forward runs under ``torch.utils.checkpoint`` (non-reentrant) whenever autograd records:
the layer keeps only its inputs for the backward pass and recomputes its internals then, so a training pass
stores one hidden state per layer instead of every attention and MLP intermediate, for about one extra forward.
Log-prob passes under ``no_grad`` run the plain forward.

transformers' own ``gradient_checkpointing_enable`` is not used: it only acts in training mode, and the policy
keeps its model in eval mode (dropout off, so the ratio against ``prev_logprobs`` is exactly 1 before the first
update). The policy has no dropout, so recomputation is exact: gradients equal the un-checkpointed ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from rlvr.errors import ConfigError


class _Recomputed:
    """A layer's bound ``forward`` run under non-reentrant checkpointing when gradients are recorded.

    An object (not a closure) so that ``copy.deepcopy`` of the model (the frozen reference policy) copies it
    along with the layer it is bound to.
    """

    def __init__(self, forward: Any):
        self.forward = forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if torch.is_grad_enabled():
            return checkpoint(self.forward, *args, use_reentrant=False, **kwargs)
        return self.forward(*args, **kwargs)


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The transformer layers: HF ``get_decoder().layers`` or megatron-core ``decoder.layers``."""
    candidates = []
    if hasattr(model, "get_decoder"):
        candidates.append(model.get_decoder())
    candidates += [getattr(model, "decoder", None), getattr(model, "model", None)]
    for owner in candidates:
        layers = getattr(owner, "layers", None)
        if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0:
            return layers
    raise ConfigError(
        f"activation_checkpointing: cannot find the decoder layers of {type(model).__name__} "
        "(expected get_decoder().layers or decoder.layers); set activation_checkpointing to false"
    )


def enable_activation_checkpointing(model: torch.nn.Module) -> int:
    """Checkpoint every decoder layer of ``model`` (idempotent); returns the number of layers."""
    layers = decoder_layers(model)
    for layer in layers:
        if not isinstance(layer.__dict__.get("forward"), _Recomputed):
            layer.forward = _Recomputed(layer.forward)
    return len(layers)
