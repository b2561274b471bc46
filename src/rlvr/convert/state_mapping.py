"""Map whole state dicts between HF names and megatron-core ``GPTModel`` names, checking names and shapes.

Both directions walk the same family table (:mod:`rlvr.convert.families`) and refuse, with one
:class:`~rlvr.errors.CheckpointError` naming every offending tensor, a state that is missing a tensor, has one
the table does not know, or has one of the wrong shape. Values are moved, never recomputed: the only
operations are the fusions of :mod:`rlvr.convert.fusion` (concatenations and slices), so a round trip is
bit-exact in any dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from rlvr.errors import CheckpointError

from .families import ExpandedRule, Family, ModelDims, get_family
from .fusion import fuse_gate_up, fuse_qkv, split_gate_up, split_qkv

# Entries that carry no weight: megatron's per-module ``_extra_state`` (None for local modules, FP8 metadata
# for Transformer Engine ones) and the RoPE buffer that older transformers versions kept in state dicts.
_IGNORED_MCORE_SUFFIXES = ("._extra_state",)
_IGNORED_HF_SUFFIXES = ("rotary_emb.inv_freq",)
_SHOW = 8  # names listed per kind of problem before "+N more"


def resolve_family(hf_config: Mapping[str, Any], *, source: str = "config.json") -> tuple[Family, ModelDims]:
    """The family of an HF config and the model sizes read from it."""
    family = get_family(hf_config, source=source)
    try:
        dims = family.read_dims(hf_config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: the {family.name} config lacks or mangles a size field: {exc!r}") from exc
    if dims.num_heads % dims.num_query_groups:
        raise CheckpointError(
            f"{source}: num_attention_heads={dims.num_heads} is not a multiple of "
            f"num_key_value_heads={dims.num_query_groups}"
        )
    return family, dims


def expected_mcore_shape(name: str, dims: ModelDims) -> tuple[int, ...]:
    """Shape of a ``GPTModel`` tensor (TP=1, unpadded vocabulary) from its name."""
    h, f, d = dims.hidden_size, dims.ffn_hidden_size, dims.head_dim
    qkv_rows = (dims.num_heads + 2 * dims.num_query_groups) * d
    table = {
        "embedding.word_embeddings.weight": (dims.vocab_size, h),
        "output_layer.weight": (dims.vocab_size, h),
        "layer_norm_weight": (h,),
        "post_layernorm.weight": (h,),
        "q_layernorm.weight": (d,),
        "k_layernorm.weight": (d,),
        "final_layernorm.weight": (h,),
        "linear_qkv.weight": (qkv_rows, h),
        "linear_qkv.bias": (qkv_rows,),
        "linear_proj.weight": (h, dims.num_heads * d),
        "linear_proj.bias": (h,),
        "linear_fc1.weight": (2 * f, h),
        "linear_fc1.bias": (2 * f,),
        "linear_fc2.weight": (h, f),
        "linear_fc2.bias": (h,),
    }
    for suffix, shape in table.items():
        if name.endswith(suffix):
            return shape
    raise KeyError(f"no shape rule for megatron-core tensor {name!r}")


def _hf_part_shapes(row: ExpandedRule, dims: ModelDims) -> list[tuple[int, ...]]:
    """Shapes of the HF tensors of one row, derived from the fused megatron shape."""
    fused = expected_mcore_shape(row.mcore, dims)
    rest = fused[1:]
    if row.kind == "qkv":
        d = dims.head_dim
        kv = (dims.num_query_groups * d, *rest)
        return [(dims.num_heads * d, *rest), kv, kv]
    if row.kind == "gate_up":
        return [(dims.ffn_hidden_size, *rest)] * 2
    return [fused]  # copy, and qkv_packed: the same rows as linear_qkv in [q; k; v] order


def _unpack_qkv(packed: torch.Tensor, dims: ModelDims) -> tuple[torch.Tensor, ...]:
    """HF ``[q; k; v]`` row blocks (``[nq*d | ng*d | ng*d, *t]``) -> ``(q, k, v)``."""
    q_rows, kv_rows = dims.num_heads * dims.head_dim, dims.num_query_groups * dims.head_dim
    return tuple(packed.split([q_rows, kv_rows, kv_rows], dim=0))


def _raise_problems(source: str, missing: list[str], unexpected: list[str], wrong: list[str]) -> None:
    """One error naming every problem found, so a user fixes them all in one go."""

    def listing(label: str, names: list[str]) -> str:
        more = f" (+{len(names) - _SHOW} more)" if len(names) > _SHOW else ""
        return f"{label}: {', '.join(names[:_SHOW])}{more}"

    parts = [
        listing(label, names)
        for label, names in (("missing tensors", missing), ("unexpected tensors", unexpected), ("wrong shapes", wrong))
        if names
    ]
    if parts:
        raise CheckpointError(f"{source}: tensors do not match the model config; " + "; ".join(parts))


def _check(
    state: Mapping[str, torch.Tensor],
    expected: dict[str, tuple[int, ...]],
    ignored: set[str],
    ignored_suffixes: tuple[str, ...],
    source: str,
) -> None:
    """Compare names and shapes of ``state`` against ``expected`` (name -> shape)."""
    missing = [n for n in expected if n not in state]
    unexpected = sorted(n for n in state if n not in expected and n not in ignored and not n.endswith(ignored_suffixes))
    wrong = [
        f"{n} is {list(state[n].shape)}, expected {list(shape)}"
        for n, shape in expected.items()
        if n in state and tuple(state[n].shape) != shape
    ]
    _raise_problems(source, missing, unexpected, wrong)


def check_mcore_state(
    mcore_state: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any], *, source: str = "checkpoint_megatron"
) -> None:
    """Raise :class:`CheckpointError` unless ``mcore_state`` has exactly the tensors (and shapes) of the config."""
    family, dims = resolve_family(hf_config, source=source)
    expected = {row.mcore: expected_mcore_shape(row.mcore, dims) for row in family.expand(dims)}
    _check(mcore_state, expected, set(), _IGNORED_MCORE_SUFFIXES, source)


def check_hf_state(
    hf_state: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any], *, source: str = "HF checkpoint"
) -> None:
    """Raise :class:`CheckpointError` unless ``hf_state`` has exactly the tensors (and shapes) of the config."""
    family, dims = resolve_family(hf_config, source=source)
    expected: dict[str, tuple[int, ...]] = {}
    for row in family.expand(dims):
        expected.update(zip(row.hf, _hf_part_shapes(row, dims), strict=True))
    ignored = {family.tied_alias[0]} if dims.tied else set()
    _check(hf_state, expected, ignored, _IGNORED_HF_SUFFIXES, source)


def hf_to_mcore_state(
    hf_state: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any], *, source: str = "HF checkpoint"
) -> dict[str, torch.Tensor]:
    """HF ``state_dict`` -> megatron-core ``GPTModel`` state (fused layer-norm names, one entry per layer)."""
    check_hf_state(hf_state, hf_config, source=source)
    family, dims = resolve_family(hf_config, source=source)
    out: dict[str, torch.Tensor] = {}
    for row in family.expand(dims):
        parts = [hf_state[name].detach() for name in row.hf]
        if row.kind == "qkv_packed":
            parts = list(_unpack_qkv(parts[0], dims))
        if row.kind in ("qkv", "qkv_packed"):
            out[row.mcore] = fuse_qkv(*parts, num_query_groups=dims.num_query_groups)
        elif row.kind == "gate_up":
            out[row.mcore] = fuse_gate_up(*parts)
        else:
            out[row.mcore] = parts[0]
    return out


def mcore_to_hf_state(
    mcore_state: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any], *, source: str = "checkpoint_megatron"
) -> dict[str, torch.Tensor]:
    """megatron-core ``GPTModel`` state -> HF ``state_dict``; with tied embeddings the HF output weight is the
    embedding tensor itself (as in a tied HF model's own ``state_dict``)."""
    check_mcore_state(mcore_state, hf_config, source=source)
    family, dims = resolve_family(hf_config, source=source)
    out: dict[str, torch.Tensor] = {}
    for row in family.expand(dims):
        tensor = mcore_state[row.mcore].detach()
        if row.kind in ("qkv", "qkv_packed"):
            parts = split_qkv(tensor, num_heads=dims.num_heads, num_query_groups=dims.num_query_groups)
            if row.kind == "qkv_packed":
                parts = (torch.cat(parts, dim=0),)
        elif row.kind == "gate_up":
            parts = split_gate_up(tensor)
        else:
            parts = (tensor,)
        out.update(zip(row.hf, parts, strict=True))
    if dims.tied:
        alias, embedding = family.tied_alias
        out[alias] = out[embedding]
    return out
