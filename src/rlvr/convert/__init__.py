"""Checkpoint conversion between HF models and the ``checkpoint_megatron`` artifact.

- :mod:`.families`: one mapping table per model family (Llama, Qwen2, Qwen3, Mistral, Phi-3,
  Gemma 2, Gemma 3 text), found from the HF config, with the numerics the model builder reproduces.
- :mod:`.fusion`: the QKV grouping and gate/up stacking, written once.
- :mod:`.state_mapping`: whole-state conversion in both directions, with name and shape checks.
- :mod:`.artifact`: the ``checkpoint_megatron`` folder layout (save, load, resolve, run config).
- :mod:`.mcore_model`: a megatron-core ``GPTModel`` built from an HF config (CPU and GPU).
- :mod:`.hf_megatron`: the ``convert/hf_to_megatron`` and ``convert/megatron_to_hf`` steps and in-memory bridges.

megatron-core and transformers are imported only by the functions that need them.
"""

from .artifact import (
    is_checkpoint_megatron,
    load_checkpoint_megatron,
    make_run_config,
    read_run_config,
    resolve_iteration_dir,
    save_checkpoint_megatron,
)
from .hf_megatron import (
    hf_to_megatron,
    load_hf_model_from_megatron,
    megatron_to_hf,
    parse_torch_dtype,
    save_hf_model_as_megatron,
)
from .state_mapping import hf_to_mcore_state, mcore_to_hf_state

__all__ = [
    "hf_to_mcore_state",
    "hf_to_megatron",
    "is_checkpoint_megatron",
    "load_checkpoint_megatron",
    "load_hf_model_from_megatron",
    "make_run_config",
    "mcore_to_hf_state",
    "megatron_to_hf",
    "parse_torch_dtype",
    "read_run_config",
    "resolve_iteration_dir",
    "save_checkpoint_megatron",
    "save_hf_model_as_megatron",
]
