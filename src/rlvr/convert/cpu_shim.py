"""What megatron-core needs to run on a machine without CUDA, and only there.

megatron-core (0.16.x) calls ``torch.cuda.current_device()`` when it places RoPE frequencies and checkpoint
bookkeeping tensors, and ``torch.cuda.synchronize()`` around checkpoint writes. Without CUDA both raise. The
shim redirects them, process-wide, to ``"cpu"`` and a no-op. It is installed only when
``torch.cuda.is_available()`` is false, so a GPU process never sees it; :func:`install_cpu_shim` is idempotent.

Side effect to know about: once installed, other code in the same CPU-only process that probes
``torch.cuda.current_device()`` gets ``"cpu"`` instead of an exception.
"""

from __future__ import annotations

import torch

_installed = False


def _current_device() -> str:
    # Callers pass the result as ``device=``; "cpu" is accepted wherever an index would be.
    return "cpu"


def _synchronize(device: object = None) -> None:
    # Nothing runs asynchronously on the CPU.
    return None


def install_cpu_shim() -> bool:
    """Redirect the two CUDA calls megatron-core makes, if CUDA is absent. Returns whether the shim is active."""
    global _installed
    if torch.cuda.is_available():
        return False
    if not _installed:
        torch.cuda.current_device = _current_device
        torch.cuda.synchronize = _synchronize
        _installed = True
    return True
