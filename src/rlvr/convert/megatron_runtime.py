"""Process-level set-up that megatron-core needs, and a synchronous ``torch_dist`` checkpoint write.

megatron-core's model classes and ``dist_checkpointing`` assume a ``torch.distributed`` process group and
initialised model-parallel state. A library caller (a test, the CLI, a training worker) usually has neither:
:func:`ensure_megatron_runtime` creates a world-size-1 group (gloo on CPU, nccl on GPU) and TP = PP = 1
state only when none exists, so a caller that set up its own distributed world keeps it.

megatron-core writes ``torch_dist`` checkpoints through its async writer, whose result queue lives in a
``spawn``-context multiprocessing manager: starting it re-imports the caller's ``__main__``, so every script
would need an ``if __name__ == "__main__":`` guard. :func:`save_torch_dist` runs the same writer (same files,
same format) synchronously with an in-process result queue instead, so no guard is needed.
"""

from __future__ import annotations

import contextlib
import os
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .cpu_shim import install_cpu_shim


def ensure_megatron_runtime() -> None:
    """Make megatron-core usable here: CPU shim (only without CUDA), a process group and TP=PP=1 state."""
    install_cpu_shim()
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            backend = "nccl"
        else:
            backend = "gloo"
        # A private in-memory store: no port, no environment variables, nothing another process can join.
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=1, pipeline_model_parallel_size=1)


@contextlib.contextmanager
def _in_process_result_queue() -> Iterator[None]:
    """Give megatron's file writer a plain in-process queue for the duration of one synchronous save.

    The writer's worker processes are forked and report to a private fork-context queue; only the final hand-off
    goes through this module-level queue, which a synchronous save reads in the same process. On a
    megatron-core without that hook the default queue is used (and scripts then need a ``__main__`` guard).
    """
    try:
        from megatron.core.dist_checkpointing.strategies import filesystem_async
    except ImportError:
        yield
        return
    if not hasattr(filesystem_async, "_results_queue"):
        yield
        return
    previous = filesystem_async._results_queue
    filesystem_async._results_queue = queue.Queue()
    try:
        yield
    finally:
        filesystem_async._results_queue = previous


def save_torch_dist(sharded_state_dict: dict[str, Any], directory: Path) -> None:
    """Write a megatron-core ``torch_dist`` checkpoint (``.metadata``, ``__*_*.distcp``, ``common.pt``,
    ``metadata.json``) into the existing empty folder ``directory``, synchronously."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.serialization import get_default_save_sharded_strategy

    ensure_megatron_runtime()
    with _in_process_result_queue():
        dist_checkpointing.save(
            sharded_state_dict, str(directory), sharded_strategy=get_default_save_sharded_strategy("torch_dist")
        )


def load_torch_dist_tensors(directory: Path, keep: Any = None) -> dict[str, torch.Tensor]:
    """Read the tensors of a ``torch_dist`` checkpoint as full, unsharded tensors keyed by their checkpoint key.

    ``keep(key) -> bool`` selects keys before any data is read (e.g. model weights, not optimizer state).
    Layer-stacked keys (``decoder.layers.*``) come back with their leading ``[num_layers]`` axis.

    A ``torch_dist`` checkpoint is a PyTorch distributed checkpoint whose ``.metadata`` records every tensor's
    global shape and dtype, so it is read with ``torch.distributed.checkpoint`` alone, without a process group:
    the same tensors as megatron-core's ``dist_checkpointing.load`` (checked in test_megatron_runtime.py), without
    importing megatron-core, which costs a few seconds of CPU at every stage start (megatron_to_hf, the rlvr
    stage's policy load).
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = dcp.FileSystemReader(str(directory))
    metadata = reader.read_metadata().state_dict_metadata
    wanted = {
        key: torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in metadata.items()
        if isinstance(meta, TensorStorageMetadata) and (keep is None or keep(key))
    }
    if wanted:
        dcp.load(wanted, storage_reader=reader, no_dist=True)
    return wanted
