"""``load_torch_dist_tensors`` reads a ``torch_dist`` checkpoint with PyTorch's distributed checkpoint reader alone:
the same keys, dtypes and values as megatron-core's own ``dist_checkpointing.load``, the independent reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlvr.convert.artifact import resolve_iteration_dir
from rlvr.convert.hf_megatron import hf_to_megatron
from rlvr.convert.megatron_runtime import ensure_megatron_runtime, load_torch_dist_tensors


def _megatron_core_load(directory: Path) -> dict[str, torch.Tensor]:
    from megatron.core import dist_checkpointing

    ensure_megatron_runtime()
    metadata = dist_checkpointing.load_tensors_metadata(str(directory))
    loaded = dist_checkpointing.load(metadata, str(directory), validate_access_integrity=False)
    return {k: v for k, v in loaded.items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_same_tensors_as_megatron_core(tmp_path: Path, hf_folder, dtype: str) -> None:
    """Every tensor of an hf_to_megatron checkpoint (layer-stacked keys included) equals megatron-core's read."""
    folder, _ = hf_folder("llama")
    iter_dir = resolve_iteration_dir(hf_to_megatron(str(folder), str(tmp_path / "ckpt"), dtype))
    ours, reference = load_torch_dist_tensors(iter_dir), _megatron_core_load(iter_dir)
    assert sorted(ours) == sorted(reference) and any(k.startswith("decoder.layers.") for k in ours)
    for key, tensor in reference.items():
        assert ours[key].dtype == tensor.dtype and ours[key].shape == tensor.shape, key
        assert torch.equal(ours[key], tensor), key


def test_keep_selects_keys_before_reading(tmp_path: Path, hf_folder) -> None:
    """``keep`` returns only the chosen keys; choosing none reads nothing and returns an empty dict."""
    folder, _ = hf_folder("llama")
    iter_dir = resolve_iteration_dir(hf_to_megatron(str(folder), str(tmp_path / "ckpt"), "float32"))
    chosen = load_torch_dist_tensors(iter_dir, keep=lambda key: key.startswith("embedding."))
    assert list(chosen) == ["embedding.word_embeddings.weight"]
    assert load_torch_dist_tensors(iter_dir, keep=lambda key: False) == {}
