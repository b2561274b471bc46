"""How a ``checkpoint_megatron`` folder is recognised: its marker files (the layout is in convert/artifact.py).

Torch-free, so that the Snakefile can decide at planning time whether a given policy already is a checkpoint
(then rlvr starts from it) or an HF folder (then hf_to_megatron converts it first).
"""

from __future__ import annotations

from pathlib import Path

TRACKER = "latest_checkpointed_iteration.txt"
TRAIN_STATE_TRACKER = "latest_train_state.pt"
RUN_CONFIG = "run_config.yaml"
TRAIN_STATE = "train_state.pt"
ROOT_MARKERS = (TRACKER, TRAIN_STATE_TRACKER)
ITERATION_MARKERS = ("metadata.json", ".metadata", RUN_CONFIG, TRAIN_STATE)


def is_checkpoint_megatron(path: str | Path) -> bool:
    """True for a checkpoint root (a tracker file) or an iteration folder (a torch_dist marker or run_config)."""
    path = Path(path)
    return path.is_dir() and any((path / m).exists() for m in ROOT_MARKERS + ITERATION_MARKERS)
