"""Modules and hooks for what megatron-core 0.16.1's local GPT spec cannot express (Gemma 2 / Gemma 3).

- :class:`OffsetRMSNorm`: RMSNorm scaled by ``(1 + w)`` and computed in fp32 (Gemma). megatron-core's switch for
  this (``layernorm_zero_centered_gamma``) is rejected by the local spec's ``WrappedTorchNorm``.
- :class:`PostNormRowParallelLinear`: a ``RowParallelLinear`` followed by an RMSNorm of its output, for Gemma's
  norms after attention and after the MLP (before each residual add); ``TransformerLayer`` has no slot for them.
  The norm's weight is ``<linear>.post_layernorm.weight``, the name Megatron-Bridge gives the same tensor.
- :class:`LocalRopeSelfAttention`: a ``SelfAttention`` that rotates with its own RoPE (Gemma 3's sliding layers use
  ``rope_theta`` 10k while full layers use 1M); ``GPTModel`` computes a single RoPE for all layers.
- :func:`add_embedding_scale` / :func:`add_final_softcap`: forward hooks multiplying the embedding output by
  ``sqrt(hidden_size)`` and soft-capping the output logits; ``GPTModel`` has neither.
"""

from __future__ import annotations

from typing import Any

import torch


class OffsetRMSNorm(torch.nn.Module):
    """``x / rms(x) * (1 + w)`` in fp32, cast back to the input dtype (transformers' ``Gemma*RMSNorm``)."""

    def __init__(self, config: Any, hidden_size: int, eps: float = 1e-6, **_unused: Any) -> None:
        super().__init__()
        self.eps = float(eps)
        # Zeros: with the (1 + w) scale, a freshly built norm is the identity scale, as in transformers.
        self.weight = torch.nn.Parameter(torch.zeros(hidden_size, dtype=config.params_dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[..., hidden_size]``."""
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (normed * (1.0 + self.weight.float())).type_as(x)


def _post_norm_linear_class() -> type:
    """Built lazily so that importing this module does not import megatron-core."""
    from megatron.core.tensor_parallel import RowParallelLinear

    class PostNormRowParallelLinear(RowParallelLinear):
        """``RowParallelLinear`` whose output goes through :class:`OffsetRMSNorm` (no bias allowed)."""

        def __init__(self, input_size: int, output_size: int, *, config: Any, **kwargs: Any) -> None:
            super().__init__(input_size, output_size, config=config, **kwargs)
            if self.bias is not None:
                raise ValueError("a post-norm linear layer must not have a bias (it would be added after the norm)")
            self.post_layernorm = OffsetRMSNorm(config, output_size, eps=config.layernorm_epsilon)

        def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
            out, bias = super().forward(x, *args, **kwargs)
            return self.post_layernorm(out), bias

    return PostNormRowParallelLinear


def _local_rope_attention_class() -> type:
    from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
    from megatron.core.transformer.attention import SelfAttention

    class LocalRopeSelfAttention(SelfAttention):
        """``SelfAttention`` that replaces the model-wide RoPE with its own (``rotary_base``, unscaled)."""

        def __init__(self, *args: Any, local_rotary_base: float, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.local_rope = RotaryEmbedding(
                kv_channels=self.config.kv_channels,
                rotary_percent=1.0,
                rotary_base=local_rotary_base,
                use_cpu_initialization=self.config.use_cpu_initialization,
            )

        def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            model_rope = kwargs.get("rotary_pos_emb")
            if isinstance(model_rope, torch.Tensor):
                # [s, 1, 1, d] frequencies for the same positions 0..s-1, from this layer's own base.
                kwargs["rotary_pos_emb"] = self.local_rope(model_rope.shape[0]).to(model_rope.device)
            return super().forward(hidden_states, *args, **kwargs)

    return LocalRopeSelfAttention


_CLASSES: dict[str, type] = {}


def post_norm_linear() -> type:
    """The :class:`PostNormRowParallelLinear` class (one per process)."""
    if "post_norm" not in _CLASSES:
        _CLASSES["post_norm"] = _post_norm_linear_class()
    return _CLASSES["post_norm"]


def local_rope_attention() -> type:
    """The :class:`LocalRopeSelfAttention` class (one per process)."""
    if "local_rope" not in _CLASSES:
        _CLASSES["local_rope"] = _local_rope_attention_class()
    return _CLASSES["local_rope"]


def add_embedding_scale(model: torch.nn.Module, scale: float) -> None:
    """Multiply ``model.embedding``'s output by ``scale`` (rounded to the activation dtype, as transformers)."""

    def hook(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output * torch.tensor(scale, dtype=output.dtype, device=output.device)

    model.embedding.register_forward_hook(hook)


def add_final_softcap(model: torch.nn.Module, cap: float) -> None:
    """Soft-cap ``model.output_layer``'s logits: ``c * tanh(logits / c)``."""

    def hook(_module: torch.nn.Module, _inputs: Any, output: tuple[torch.Tensor, Any]) -> tuple[torch.Tensor, Any]:
        logits, bias = output
        return torch.tanh(logits / cap) * cap, bias

    model.output_layer.register_forward_hook(hook)
