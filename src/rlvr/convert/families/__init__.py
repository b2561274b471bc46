"""Registry of model families that the HF <-> megatron-core converter knows, keyed by HF config names.

A family is found from the HF config's ``architectures`` (first entry) or, failing that, its ``model_type``.
An unknown one is a :class:`rlvr.errors.CheckpointError` that lists the known names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlvr.errors import CheckpointError

from . import gemma, llama, mistral, phi3, qwen2, qwen3
from .table import ExpandedRule, Family, ModelDims, Rule

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (llama.FAMILY, qwen2.FAMILY, qwen3.FAMILY, mistral.FAMILY, phi3.FAMILY, gemma.GEMMA2, gemma.GEMMA3)
}

__all__ = ["FAMILIES", "ExpandedRule", "Family", "ModelDims", "Rule", "get_family", "known_names"]


def known_names() -> list[str]:
    """Every architecture and model_type a family answers to, sorted."""
    return sorted({n for f in FAMILIES.values() for n in (*f.architectures, *f.model_types)})


def get_family(hf_config: Mapping[str, Any], *, source: str = "config.json") -> Family:
    """The family of an HF config dict; ``source`` names the file in the error message."""
    architectures = list(hf_config.get("architectures") or [])
    model_type = hf_config.get("model_type")
    for family in FAMILIES.values():
        if any(a in family.architectures for a in architectures):
            return family
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    raise CheckpointError(
        f"{source}: unsupported model architecture (architectures={architectures or None}, "
        f"model_type={model_type!r}); known: {', '.join(known_names())}. "
        "Add a mapping table under rlvr/convert/families/ to support it."
    )
