"""The preallocated KV cache: the same logits as transformers' DynamicCache, through growth and row drops."""

from __future__ import annotations

import inspect

import torch
from torch.testing import assert_close
from transformers import DynamicCache, MistralConfig, MistralForCausalLM

from rlvr.generation.kv_cache import PreallocatedLayer, preallocated_cache


def _decode(model, cache, steps: int = 5) -> list[torch.Tensor]:
    """Prefill 3 left-padded rows, drop row 1 after two steps, decode; the last-position logits of every step."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 20, (3, 6), generator=g)
    mask = torch.ones_like(ids)
    mask[2, :2] = 0  # a shorter, left-padded prompt
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{name: cache})
    cache, logits = getattr(out, name), [out.logits[:, -1]]
    next_position = positions[:, -1:] + 1
    for step in range(steps):
        token = torch.randint(4, 20, (mask.shape[0], 1), generator=g)
        if step == 2:
            keep = torch.tensor([0, 2])
            cache.batch_select_indices(keep)
            mask, token, next_position = mask[keep], token[keep], next_position[keep]
        mask = torch.nn.functional.pad(mask, (0, 1), value=1)
        out = model(input_ids=token, attention_mask=mask, position_ids=next_position, use_cache=True, **{name: cache})
        cache = getattr(out, name)
        logits.append(out.logits[:, -1])
        next_position = next_position + 1
    return logits


@torch.no_grad()
def test_preallocated_cache_gives_the_dynamic_cache_logits(model):
    """Capacity 7 < 6 prompt + 5 new positions: the buffers double once; a row drop in between; every step's
    logits equal those with DynamicCache, and nothing is concatenated per token."""
    cache = preallocated_cache(model, capacity=7)
    assert cache is not None and all(isinstance(layer, PreallocatedLayer) for layer in cache.layers)
    ours = _decode(model, cache)
    plain = _decode(model, DynamicCache())
    for step, (a, b) in enumerate(zip(ours, plain)):
        assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"step {step}")
    layer = cache.layers[0]
    assert layer.length == 11 and layer.keys.shape[-2] == 11 and layer._key_buffer.shape[-2] == 14
    assert layer.keys.data_ptr() == layer._key_buffer.data_ptr()  # a view of the buffer, not a copy


def test_models_with_sliding_windows_keep_their_own_cache():
    config = MistralConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        sliding_window=4,
    )
    assert preallocated_cache(MistralForCausalLM(config), capacity=8) is None
