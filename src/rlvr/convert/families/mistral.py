"""Mistral family (``MistralForCausalLM``): Llama's tensors (no biases) with sliding-window attention.

transformers applies ``sliding_window`` (when not null) to every layer: query ``q`` attends to keys ``k`` with
``q - sliding_window < k <= q``. ``layer_types`` is ignored by ``MistralModel`` (transformers warns and points
to Ministral), so it is ignored here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import llama
from .compute import Compute, llama_like
from .table import Family, ModelDims


def read_dims(cfg: Mapping[str, Any]) -> ModelDims:
    """Mistral has no bias anywhere."""
    return llama.read_common_dims(cfg, qkv_bias=False, proj_bias=False, mlp_bias=False)


def read_compute(cfg: Mapping[str, Any], source: str) -> Compute:
    """Every layer slides by ``sliding_window`` (``None``: full attention everywhere)."""
    without_types = {k: v for k, v in cfg.items() if k != "layer_types"}
    return llama_like(without_types, source, cfg.get("sliding_window"))


FAMILY = Family(
    name="mistral",
    architectures=("MistralForCausalLM",),
    model_types=("mistral",),
    rules=llama.RULES,
    read_dims=read_dims,
    tied_alias=("lm_head.weight", "model.embed_tokens.weight"),
    read_compute=read_compute,
)
