"""The piece of rlvr that runs inside each vLLM worker process (vLLM's ``worker_extension_cls`` hook).

vLLM mixes this class into its GPU worker, so ``self.model_runner`` is the worker's model runner. It is a
separate module because vLLM imports it by qualified name in every worker.
"""

from __future__ import annotations

from typing import Any


class RlvrWeightLoader:
    """Adds ``rlvr_load_weights``, called by :meth:`VLLMGenerationBackend.update_weights` via ``collective_rpc``."""

    def rlvr_load_weights(self, weights: list[tuple[str, Any]]) -> int:
        """Load HF-named tensors; the model's ``load_weights`` fuses QKV and gate/up and shards for TP."""
        model = self.model_runner.model  # type: ignore[attr-defined]
        device = next(model.parameters()).device
        loaded = model.load_weights(weights=((name, tensor.to(device)) for name, tensor in weights))
        return len(loaded) if loaded is not None else len(weights)
