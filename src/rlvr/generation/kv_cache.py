"""A KV cache whose storage is allocated once per generation batch (no ``torch.cat`` per token).

transformers' ``DynamicLayer`` appends each step's keys and values with ``torch.cat``, which copies the whole
cache of the layer: the copies grow with the length, and on a CPU they took a quarter of a decode step at the
20M benchmark size (torch profiler, ``aten::cat``). Here each layer writes into a ``[B, H, capacity, D]`` buffer
sized for the prompt plus ``max_new_tokens`` and hands attention a view of its first ``length`` positions: the
same keys and values, so the same logits (``tests/unit/generation/test_kv_cache.py``). A buffer that fills up
doubles. Dropping finished rows (``batch_select_indices``) copies the remaining rows' buffers once.

Used for models whose every layer is plain full attention (:func:`preallocated_cache` returns None otherwise,
and the model builds its own cache).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` over a preallocated buffer; ``keys``/``values`` are views of its used part."""

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``[B, H, n, D]`` new states after the cached ones; returns views of all of them."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if self._key_buffer is None or end > self._key_buffer.shape[-2]:
            self._grow(key_states, value_states, max(end, 2 * self.length, self.capacity))
        self._key_buffer[:, :, self.length : end] = key_states
        self._value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, capacity: int) -> None:
        batch, heads, _, dim = key_states.shape
        keys = key_states.new_empty((batch, heads, capacity, dim))
        values = value_states.new_empty((batch, heads, capacity, value_states.shape[-1]))
        if self._key_buffer is not None:
            keys[:, :, : self.length] = self._key_buffer[:, :, : self.length]
            values[:, :, : self.length] = self._value_buffer[:, :, : self.length]
        self._key_buffer, self._value_buffer = keys, values

    def _expose(self) -> None:
        self.keys = self._key_buffer[:, :, : self.length]
        self.values = self._value_buffer[:, :, : self.length]

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows ``indices`` (a copy of their buffers, capacity kept)."""
        if self._key_buffer is not None:
            self._key_buffer = self._key_buffer[indices]
            self._value_buffer = self._value_buffer[indices]
            self._expose()


def preallocated_cache(model: torch.nn.Module, capacity: int) -> Cache | None:
    """A cache of :class:`PreallocatedLayer` per decoder layer holding ``capacity`` positions, or None where a
    layer is not plain full attention (sliding windows, linear attention: the model's own cache handles those)."""
    config = getattr(model, "config", None)
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = getattr(config, "num_hidden_layers", None)
    layer_types = getattr(config, "layer_types", None) or ["full_attention"] * (layers or 0)
    if not layers or getattr(config, "sliding_window", None) or set(layer_types) != {"full_attention"}:
        return None
    return Cache(layers=[PreallocatedLayer(capacity) for _ in range(layers)])
