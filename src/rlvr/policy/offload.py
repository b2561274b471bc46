"""Training memory handed back while generation runs on the same device (NeMo-RL's colocated offload).

With colocated generation (``policy.generation.colocated.enabled``, the default) a GRPO step takes turns on
each device: the generation engine samples, then the policy scores and trains. NeMo-RL's DTensor worker frees
the training phase's memory for the generation phase (``offload_before_refit``: the optimizer state to CPU)
and brings it back before the optimizer step (``prepare_for_training``); ``policy.offload_optimizer_for_logprob``
also keeps it on the CPU during the log-prob pass (``prepare_for_lp_inference``). Here:

* :meth:`OptimizerOffload.offload` copies every tensor of the optimizer's state (AdamW's two moments: twice the
  trainable parameters, in fp32) to the host and drops the device copies; the gradients left by the last
  optimizer step are released (``grad = None``: the next step zeroes them with ``set_to_none`` anyway, so no
  result changes); then the CUDA caching allocator returns the freed blocks to the driver, so that a
  generation engine in *another* process (a Ray replica, vLLM) on the same GPU can use them;
* :meth:`OptimizerOffload.reload` puts each tensor back on the device it came from (AdamW's ``step`` counters
  stay where the optimizer keeps them), before the next optimizer step.

The copies are bit-exact, so a run with the hand-back trains exactly as one without. On a CPU there is nothing
to hand back (the state already lives in host memory): :class:`~rlvr.policy.hf.HFPolicy` hands back only when
its model is on a GPU. The mechanics work the same way from CPU to CPU (a fresh host copy), which is how the
tests check them on a machine without a GPU.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import Any

import torch
from torch.distributed.tensor import DTensor


class OptimizerOffload:
    """Moves ``optimizer``'s state to ``host`` and back; idempotent in both directions."""

    def __init__(self, optimizer: torch.optim.Optimizer, host: str | torch.device = "cpu"):
        self.optimizer = optimizer
        self.host = torch.device(host)
        self._homes: list[tuple[dict, str, torch.device]] | None = None  # (state entry, key, device) when offloaded

    @property
    def offloaded(self) -> bool:
        return self._homes is not None

    @torch.no_grad()
    def offload(self) -> int:
        """Optimizer state to the host, gradients released, device cache emptied; returns the bytes moved."""
        if self._homes is not None:
            return 0
        homes, moved, on_gpu = [], 0, False
        for entry in self.optimizer.state.values():
            for key, value in entry.items():
                if isinstance(value, torch.Tensor):
                    homes.append((entry, key, value.device))
                    on_gpu |= value.device.type == "cuda"
                    local = value.to_local() if isinstance(value, DTensor) else value  # this rank's shard
                    moved += local.numel() * local.element_size()
                    entry[key] = value.to(self.host, copy=True)  # a copy even on the same device: never aliased
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                on_gpu |= param.grad is not None and param.grad.device.type == "cuda"
                param.grad = None
        self._homes = homes
        if on_gpu:
            gc.collect()
            torch.cuda.empty_cache()
        return moved

    @torch.no_grad()
    def reload(self) -> None:
        """Every state tensor back on the device it was offloaded from (bit-exact)."""
        if self._homes is None:
            return
        for entry, key, device in self._homes:
            entry[key] = entry[key].to(device, copy=True)
        self._homes = None


def offload_settings(policy_cfg: Mapping[str, Any], device: torch.device) -> dict[str, bool]:
    """HFPolicy's two hand-back switches for a model on ``device``: while colocated generation runs
    (``policy.generation.colocated.enabled``) and during log-prob passes (``policy.offload_optimizer_for_logprob``);
    both off on a CPU, where the state already lives in host memory."""
    on_gpu = torch.device(device).type == "cuda"
    return {
        "offload_for_generation": on_gpu and bool(policy_cfg["generation"]["colocated"]["enabled"]),
        "offload_for_logprob": on_gpu and bool(policy_cfg["offload_optimizer_for_logprob"]),
    }
