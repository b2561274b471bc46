"""The shape of a per-family mapping table between HF and megatron-core parameter names.

A family table is a tuple of :class:`Rule` rows. Each row names one megatron-core ``GPTModel`` tensor (the
names a Megatron-Bridge ``torch_dist`` checkpoint uses, with the fused layer-norm names
``self_attention.linear_qkv.layer_norm_weight`` / ``mlp.linear_fc1.layer_norm_weight``) and the HF tensors it
is made of. ``{i}`` in a name stands for the layer index. The row's ``kind`` says how the HF parts combine:

- ``copy``: one HF tensor, same shape, same values.
- ``qkv``: HF ``(q, k, v)`` projections fused into megatron's grouped ``linear_qkv`` (see :mod:`..fusion`).
- ``gate_up``: HF ``(gate, up)`` projections stacked into megatron's ``linear_fc1`` (see :mod:`..fusion`).
- ``qkv_packed``: one HF tensor holding ``[q; k; v]`` row blocks (Phi-3's ``qkv_proj``), regrouped into
  megatron's ``linear_qkv``.

``when`` names a boolean attribute of :class:`ModelDims`; the row only exists when it is true (biases,
untied output layer). The row list is the single source of truth for both directions of the conversion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .compute import Compute

RuleKind = Literal["copy", "qkv", "gate_up", "qkv_packed"]

_PARTS_PER_KIND: dict[str, int] = {"copy": 1, "qkv": 3, "gate_up": 2, "qkv_packed": 1}


@dataclass(frozen=True)
class ModelDims:
    """The sizes and switches of a decoder-only transformer that decide tensor names and shapes.

    ``head_dim`` is ``d``; the fused QKV weight has ``(num_heads + 2 * num_query_groups) * d`` rows.
    """

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_heads: int
    num_query_groups: int
    head_dim: int
    vocab_size: int
    tied: bool
    qkv_bias: bool
    proj_bias: bool
    mlp_bias: bool
    qk_norm: bool = False  # per-head RMSNorm of queries and keys (Qwen3, Gemma 3)
    post_norms: bool = False  # RMSNorm after attention and after the MLP, before each residual add (Gemma 2/3)

    @property
    def untied(self) -> bool:
        """True when the output layer has its own weight (``lm_head`` / ``output_layer``)."""
        return not self.tied


@dataclass(frozen=True)
class Rule:
    """One megatron-core tensor and the HF tensor(s) it is built from (names may contain ``{i}``)."""

    mcore: str
    hf: tuple[str, ...]
    kind: RuleKind = "copy"
    when: str | None = None

    def __post_init__(self) -> None:
        # A malformed table is a programming error: fail at import, not in the middle of a conversion.
        if len(self.hf) != _PARTS_PER_KIND[self.kind]:
            raise ValueError(f"rule {self.mcore!r}: kind {self.kind!r} needs {_PARTS_PER_KIND[self.kind]} HF names")
        if ("{i}" in self.mcore) != all("{i}" in name for name in self.hf):
            raise ValueError(f"rule {self.mcore!r}: the layer index {{i}} must appear on both sides")

    @property
    def per_layer(self) -> bool:
        """True when the row repeats for every decoder layer."""
        return "{i}" in self.mcore


@dataclass(frozen=True)
class ExpandedRule:
    """A :class:`Rule` with ``{i}`` filled in: concrete tensor names."""

    mcore: str
    hf: tuple[str, ...]
    kind: RuleKind


@dataclass(frozen=True)
class Family:
    """A model family: how to recognise its HF config, read its sizes, and map its tensors.

    ``tied_alias`` is ``(hf_output_name, hf_embedding_name)``: with tied embeddings HF state dicts still carry
    the output weight as an alias of the embedding; it maps to nothing in megatron-core (``GPTModel`` reuses
    ``embedding.word_embeddings.weight``), and is written back as the same tensor on export.
    ``read_compute(cfg, source)`` gives the numerics the model builder reproduces (and refuses what it cannot).
    """

    name: str
    architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    rules: tuple[Rule, ...]
    read_dims: Callable[[Mapping[str, Any]], ModelDims]
    tied_alias: tuple[str, str]
    read_compute: Callable[[Mapping[str, Any], str], Compute]

    def expand(self, dims: ModelDims) -> list[ExpandedRule]:
        """The concrete rows for a model of these sizes: per-layer rows repeated, absent optional rows dropped."""
        rows: list[ExpandedRule] = []
        for rule in self.rules:
            if rule.when is not None and not getattr(dims, rule.when):
                continue
            layers = range(dims.num_layers) if rule.per_layer else [None]
            for i in layers:

                def fill(name: str, i: int | None = i) -> str:
                    return name if i is None else name.format(i=i)

                rows.append(ExpandedRule(fill(rule.mcore), tuple(fill(h) for h in rule.hf), rule.kind))
        return rows
