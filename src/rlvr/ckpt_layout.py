"""How a ``checkpoint_megatron`` folder is recognised and read without its weights: its marker files, the
iteration its tracker names, its ``run_config.yaml`` and tokenizer folder (the layout is in convert/artifact.py).

Torch-free, so that the Snakefile can decide at planning time whether a given policy already is a checkpoint
(then rlvr starts from it) or an HF folder (then hf_to_megatron converts it first), ``-d`` can size the model for
its memory estimate, and rl_prep can find the checkpoint's tokenizer, none of them importing torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rlvr.errors import CheckpointError
from rlvr.utils.yaml_loaders import safe_load

TRACKER = "latest_checkpointed_iteration.txt"
TRAIN_STATE_TRACKER = "latest_train_state.pt"
RUN_CONFIG = "run_config.yaml"
TRAIN_STATE = "train_state.pt"
ROOT_MARKERS = (TRACKER, TRAIN_STATE_TRACKER)
ITERATION_MARKERS = ("metadata.json", ".metadata", RUN_CONFIG, TRAIN_STATE)
TOKENIZER_DIR = "tokenizer"


def is_checkpoint_megatron(path: str | Path) -> bool:
    """True for a checkpoint root (a tracker file) or an iteration folder (a torch_dist marker or run_config)."""
    path = Path(path)
    return path.is_dir() and any((path / m).exists() for m in ROOT_MARKERS + ITERATION_MARKERS)


def iteration_dir_name(iteration: int) -> str:
    """``iter_%07d``, the Megatron folder name of an iteration."""
    return f"iter_{iteration:07d}"


def is_root(path: Path) -> bool:
    """A checkpoint root: it has a tracker file."""
    return any((path / m).exists() for m in ROOT_MARKERS)


def _is_iteration(path: Path) -> bool:
    return any((path / m).exists() for m in ITERATION_MARKERS)


def resolve_iteration_dir(path: str | Path) -> Path:
    """The iteration folder to read: ``path`` itself if it is one, else the root's tracked newest iteration."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint_megatron folder does not exist")
    if not path.is_dir():
        raise CheckpointError(f"{path}: expected a checkpoint_megatron folder, found a file")
    if (path / TRACKER).is_file():
        text = (path / TRACKER).read_text().strip()
        if text == "release":
            name = "release"
        elif text.isdigit():
            name = iteration_dir_name(int(text))
        else:
            raise CheckpointError(f"{path / TRACKER}: expected an iteration number or 'release', found {text!r}")
        if not (path / name).is_dir():
            raise CheckpointError(f"{path / TRACKER} names iteration {text}, but {path / name} does not exist")
        return path / name
    if _is_iteration(path):
        return path
    iterations = sorted(p.name for p in path.glob("iter_*") if p.is_dir())
    if iterations:
        raise CheckpointError(
            f"{path}: has {', '.join(iterations[-3:])} but no {TRACKER}; pass one iter_* folder directly, or "
            f"write the iteration number into {path / TRACKER}"
        )
    raise CheckpointError(
        f"{path}: not a checkpoint_megatron: expected {TRACKER} (a checkpoint root) or metadata.json/.metadata "
        "(an iter_* folder)"
    )


def read_run_config(path: str | Path) -> dict[str, Any]:
    """``run_config.yaml`` of the resolved iteration; it must record the HF config under ``model.hf_config``."""
    config_file = resolve_iteration_dir(path) / RUN_CONFIG
    if not config_file.is_file():
        raise CheckpointError(f"{config_file}: missing; the model architecture of this checkpoint is unknown")
    try:
        run_config = safe_load(config_file.read_text())
    except yaml.YAMLError as exc:
        raise CheckpointError(f"{config_file}: not valid YAML: {exc}") from exc
    hf_config = (run_config or {}).get("model", {}).get("hf_config") if isinstance(run_config, dict) else None
    if not isinstance(hf_config, dict):
        raise CheckpointError(
            f"{config_file}: no model.hf_config mapping; this checkpoint was not written by rlvr, so its "
            "architecture cannot be rebuilt"
        )
    return run_config
