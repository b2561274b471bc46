"""The ``checkpoint_megatron`` artifact: a Megatron-Bridge-style root holding megatron-core ``torch_dist`` saves.

Layout (what :func:`save_checkpoint_megatron` writes)::

    <root>/
    ├── latest_checkpointed_iteration.txt   # tracker: the newest iteration, e.g. "0"
    ├── latest_train_state.pt               # only when a train state is given (copy of the iteration's)
    └── iter_0000000/                       # "iter_%07d"
        ├── .metadata, __0_0.distcp, ...    # torch DCP, written by megatron-core dist_checkpointing
        ├── common.pt, metadata.json        # megatron-core common state and format marker (torch_dist)
        ├── run_config.yaml                 # model architecture (HF config dict), source hf_model_id, dtypes
        ├── train_state.pt                  # only when a train state is given
        └── tokenizer/                      # tokenizer and generation assets, when the source had them

Tensor keys are megatron-core ``GPTModel`` sharded keys, exactly as ``GPTModel.sharded_state_dict()`` (local
spec, TP = PP = 1) saves them: per-layer tensors stacked under ``decoder.layers.<name>`` with a leading
``[num_layers]`` axis, fused layer-norm names, plus the ``_extra_state`` objects of the four linear layers. A
megatron-core model can therefore load the folder with ``dist_checkpointing.load(model.sharded_state_dict())``.
In memory the state is flat, one entry per layer: ``decoder.layers.N.self_attention.linear_qkv.weight``.

Readers accept the root (newest iteration, through the tracker) or an ``iter_*`` folder.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import torch
import yaml

from rlvr.ckpt_layout import (  # noqa: F401 - re-exported: the layout's names and readers, defined torch-free there
    ITERATION_MARKERS,
    ROOT_MARKERS,
    RUN_CONFIG,
    TOKENIZER_DIR,
    TRACKER,
    TRAIN_STATE,
    TRAIN_STATE_TRACKER,
    is_checkpoint_megatron,
    is_root,
    iteration_dir_name,
    read_run_config,
    resolve_iteration_dir,
)
from rlvr.errors import CheckpointError
from rlvr.utils.atomic import atomic_dir, atomic_file

from .megatron_runtime import load_torch_dist_tensors, save_torch_dist
from .state_mapping import check_mcore_state, resolve_family

# Files carried along with the weights: what a tokenizer's save_pretrained writes, plus generation defaults.
TOKENIZER_PATTERNS = (
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "*.tiktoken",
    "*.model",
    "chat_template*",
    "generation_config.json",
)
_LAYER_KEY = re.compile(r"^decoder\.layers\.(\d+)\.(.+)$")
_LAYER_LINEARS = ("self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2")
_MODEL_KEY_PREFIXES = ("embedding.", "decoder.", "output_layer.")


def make_run_config(
    hf_config: Mapping[str, Any],
    *,
    hf_model_id: str | None,
    params_dtype: torch.dtype,
    source_dtype: torch.dtype | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``run_config.yaml`` content: the HF config (enough to rebuild the HF model and the GPTModel), its
    megatron-core reading, and the source ``hf_model_id`` (also under ``extra_checkpoint_metadata``, where
    Megatron-Bridge keeps it). ``source_dtype`` is the dtype of the HF model the weights came from (what an
    export writes by default; ``params_dtype`` when not given). ``extra`` adds top-level sections."""
    family, dims = resolve_family(hf_config)
    run_config: dict[str, Any] = {
        "model": {
            "family": family.name,
            "hf_model_id": hf_model_id,
            "num_layers": dims.num_layers,
            "hidden_size": dims.hidden_size,
            "ffn_hidden_size": dims.ffn_hidden_size,
            "num_attention_heads": dims.num_heads,
            "num_query_groups": dims.num_query_groups,
            "kv_channels": dims.head_dim,
            "vocab_size": dims.vocab_size,
            "share_embeddings_and_output_weights": dims.tied,
            "add_qkv_bias": dims.qkv_bias,
            "add_bias_linear": dims.proj_bias,
            "qk_layernorm": dims.qk_norm,
            "normalization": "RMSNorm",
            "gated_linear_unit": True,
            "position_embedding_type": "rope",
            "params_dtype": str(params_dtype).removeprefix("torch."),
            "source_dtype": str(source_dtype or params_dtype).removeprefix("torch."),
            "hf_config": dict(hf_config),
        },
        "checkpoint": {"format": "torch_dist", "tensor_model_parallel_size": 1, "pipeline_model_parallel_size": 1},
        "extra_checkpoint_metadata": {"hf_model_id": hf_model_id},
    }
    for key, value in (extra or {}).items():
        if key in run_config:
            raise ValueError(f"run_config_extra may not replace the reserved section {key!r}")
        run_config[key] = value
    return run_config


def copy_tokenizer_assets(source: Path, target: Path) -> list[str]:
    """Copy the tokenizer/generation files of ``source`` (top level only) into ``target``; return their names."""
    names = sorted(
        p.name for p in source.iterdir() if p.is_file() and any(fnmatch(p.name, pat) for pat in TOKENIZER_PATTERNS)
    )
    if names:
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy2(source / name, target / name)
    return names


def _sharded_state_dict(state: Mapping[str, torch.Tensor], num_layers: int, iteration: int) -> dict[str, Any]:
    """Wrap a flat state in megatron-core sharded objects laid out as ``GPTModel.sharded_state_dict()`` does."""
    from megatron.core.dist_checkpointing import ShardedObject, ShardedTensor

    sharded: dict[str, Any] = {"checkpoint_version": 3.0, "iteration": iteration}
    for name, tensor in state.items():
        match = _LAYER_KEY.match(name)
        if match:
            layer, rest = int(match[1]), match[2]
            sharded[name] = ShardedTensor.from_rank_offsets(
                f"decoder.layers.{rest}", tensor.detach(), (0, layer, num_layers), replica_id=0, prepend_axis_num=1
            )
        else:
            sharded[name] = ShardedTensor.from_rank_offsets(name, tensor.detach(), replica_id=0)
    for layer in range(num_layers):
        for module in _LAYER_LINEARS:
            key = f"decoder.layers.{module}._extra_state"
            sharded[f"decoder.layers.{layer}.{module}._extra_state"] = ShardedObject(
                key, None, (num_layers,), (layer,), replica_id=0
            )
    return sharded


def _write_iteration(
    iter_dir: Path,
    state: Mapping[str, torch.Tensor],
    run_config: dict[str, Any],
    tokenizer_dir: Path | None,
    train_state: dict[str, Any] | None,
    iteration: int,
) -> None:
    """Fill the empty folder ``iter_dir`` with one complete iteration."""
    _, dims = resolve_family(run_config["model"]["hf_config"])
    save_torch_dist(_sharded_state_dict(state, dims.num_layers, iteration), iter_dir)
    (iter_dir / RUN_CONFIG).write_text(yaml.safe_dump(run_config, sort_keys=False))
    if train_state is not None:
        torch.save(train_state, iter_dir / TRAIN_STATE)
    if tokenizer_dir is not None:
        copy_tokenizer_assets(Path(tokenizer_dir), iter_dir / TOKENIZER_DIR)


def _write_trackers(root: Path, iteration: int, train_state: dict[str, Any] | None) -> None:
    """Point the root at ``iteration``; drop a train-state tracker that would describe an older iteration."""
    with atomic_file(root / TRACKER) as fh:
        fh.write(f"{iteration}\n")
    if train_state is not None:
        with atomic_file(root / TRAIN_STATE_TRACKER, "wb") as fh:
            torch.save(train_state, fh)
    else:
        (root / TRAIN_STATE_TRACKER).unlink(missing_ok=True)


def save_checkpoint_megatron(
    root: str | Path,
    mcore_state: Mapping[str, torch.Tensor],
    *,
    run_config: dict[str, Any],
    tokenizer_dir: str | Path | None = None,
    iteration: int = 0,
    train_state: dict[str, Any] | None = None,
) -> Path:
    """Save ``mcore_state`` (flat ``GPTModel`` names) as iteration ``iteration`` of the checkpoint at ``root``.

    A missing root is created whole and atomically; an existing checkpoint root gets the new (or replaced)
    iteration folder atomically, then its trackers. The state is checked against ``run_config`` first, so a
    wrong tensor raises :class:`CheckpointError` before anything is written. Returns the iteration folder.
    """
    root = Path(root)
    source = f"state for {root}"
    check_mcore_state(mcore_state, run_config["model"]["hf_config"], source=source)
    if iteration < 0:
        raise ValueError(f"iteration must be >= 0, got {iteration}")
    run_config = {**run_config, "checkpoint": {**run_config.get("checkpoint", {}), "iteration": iteration}}
    name = iteration_dir_name(iteration)
    tok = Path(tokenizer_dir) if tokenizer_dir is not None else None
    if root.exists() and not root.is_dir():
        raise CheckpointError(f"{root}: exists and is a file; a checkpoint_megatron root must be a folder")
    if root.exists() and any(root.iterdir()):
        if not is_root(root):
            raise CheckpointError(f"{root}: exists and is not a checkpoint_megatron root; choose an empty path")
        with atomic_dir(root / name) as tmp:
            _write_iteration(tmp, mcore_state, run_config, tok, train_state, iteration)
        _write_trackers(root, iteration, train_state)
    else:
        with atomic_dir(root) as tmp:
            (tmp / name).mkdir()
            _write_iteration(tmp / name, mcore_state, run_config, tok, train_state, iteration)
            _write_trackers(tmp, iteration, train_state)
    return root / name


def _unstack_layers(raw: Mapping[str, torch.Tensor], num_layers: int, source: str) -> dict[str, torch.Tensor]:
    """Checkpoint keys -> flat state: ``decoder.layers.X [L, ...]`` becomes ``decoder.layers.N.X [...]``."""
    state: dict[str, torch.Tensor] = {}
    for key, tensor in raw.items():
        if not key.startswith("decoder.layers."):
            state[key] = tensor
            continue
        if tensor.dim() == 0 or tensor.shape[0] != num_layers:
            raise CheckpointError(
                f"{source}: tensor {key} stacks {tensor.shape[0] if tensor.dim() else 0} layers, "
                f"but run_config.yaml says num_layers={num_layers}"
            )
        rest = key.removeprefix("decoder.layers.")
        for layer in range(num_layers):
            state[f"decoder.layers.{layer}.{rest}"] = tensor[layer].clone()
    return state


def load_checkpoint_megatron(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """Read a ``checkpoint_megatron`` root or iteration folder without building a model.

    Returns ``(state, run_config, iter_dir)``: the flat ``GPTModel``-named state (checked against the recorded
    architecture: every tensor present, nothing extra, every shape right), the run config, and the folder read.
    """
    iter_dir = resolve_iteration_dir(path)
    for marker in ("metadata.json", ".metadata"):
        if not (iter_dir / marker).is_file():
            raise CheckpointError(f"{iter_dir}: no {marker}; the torch_dist save is incomplete or missing")
    run_config = read_run_config(iter_dir)
    hf_config = run_config["model"]["hf_config"]
    _, dims = resolve_family(hf_config, source=str(iter_dir / RUN_CONFIG))
    try:
        raw = load_torch_dist_tensors(iter_dir, keep=lambda key: key.startswith(_MODEL_KEY_PREFIXES))
    except CheckpointError:
        raise
    except Exception as exc:  # megatron-core / DCP errors: corrupt or foreign files
        raise CheckpointError(f"{iter_dir}: cannot read the torch_dist tensors: {exc}") from exc
    state = _unstack_layers(raw, dims.num_layers, str(iter_dir))
    check_mcore_state(state, hf_config, source=str(iter_dir))
    return state, run_config, iter_dir
