"""The contracts between the GRPO roles and a policy backend: :class:`Policy` and :class:`LossFunction`.

The controller's :class:`~rlvr.grpo.roles.PolicyWorkers` talks to the trained policy (and to the frozen reference
policy) only through :class:`Policy`; the policy calls the loss back, once per micro-batch, through
:class:`LossFunction` (NeMo-RL's split: ``loss/interfaces.py::LossFunction``). Implementations:
:class:`~rlvr.policy.hf.HFPolicy` (transformers; with LoRA adapters when ``lora_cfg.enabled``),
:class:`~rlvr.policy.megatron.MegatronPolicy` (megatron-core ``GPTModel``) and
:class:`~rlvr.distributed.policy_group.RayPolicyGroup` (data-parallel replicas on Ray).

Tensors: ``B`` rows (sequences), ``S`` positions; log-probs are float32 ``[B, S]`` with ``lp[:, t] = log p(x_t |
x_<t)`` and 0 at position 0 and at padding. Train metrics are python floats; how each combines over micro-batches,
optimizer steps and ranks is declared once in :mod:`rlvr.policy.train_metrics`.

A new backend implements every method below; ``isinstance(obj, Policy)`` checks the names only (``Protocol``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class LossFunction(Protocol):
    """The per-micro-batch loss a policy's ``train`` calls (:class:`~rlvr.grpo.loss.ClippedPGLoss`).

    ``logprobs [b, S]``: the current policy's log-probs of one micro-batch (with grad). ``data``: that micro-batch's
    rows of the train batch (``token_mask``, ``sample_mask``, ``advantages``, ``prev_logprobs``, ...).
    ``global_valid_seqs`` / ``global_valid_toks``: the valid sequences / predicted tokens of the whole *global*
    batch (summed over ranks), by which the loss divides, so micro-batch losses (and their gradients) add up to the
    global-batch loss whatever the split. Returns ``(loss, metrics)``: a scalar tensor and python floats.
    """

    def __call__(
        self,
        logprobs: torch.Tensor,
        data: Mapping[str, Any],
        global_valid_seqs: torch.Tensor,
        global_valid_toks: torch.Tensor,
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


@runtime_checkable
class Policy(Protocol):
    """What the GRPO roles need of a policy: score, train, hand out its weights, checkpoint, export, stop.

    A frozen policy (the reference) is built without trainable parameters: it only scores, and ``train`` raises.
    """

    def get_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, micro_batch_size: int, filtered: bool = True
    ) -> torch.Tensor:
        """Log-probs ``[B, S]`` (float32, CPU) under the sampler's distribution: the generation temperature, and
        with ``filtered`` also its top-k/top-p (tokens outside the filtered set are reported as 0)."""
        ...

    def train(
        self, batch: Mapping[str, Any], loss_fn: LossFunction, *, global_batch_size: int, micro_batch_size: int
    ) -> dict[str, float]:
        """``B / global_batch_size`` optimizer steps over ``batch`` (``[B, ...]`` tensors, not shuffled), micro-
        batches of ``micro_batch_size`` rows (per rank), one LR-scheduler step; returns the step's train metrics."""
        ...

    def offload_before_refit(self) -> None:
        """Colocated generation is about to use the policy's devices: hand back what training alone needs (the
        optimizer state, to host memory; the last step's gradients). ``train`` brings it back first."""
        ...

    def prepare_for_lp_inference(self) -> None:
        """Before a log-prob pass (``policy.offload_optimizer_for_logprob``: the optimizer state to the host)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """``{"model", "master_weights", "optimizer", "scheduler"}`` for a checkpoint (CPU or device tensors)."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...

    def load_model_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Weights only (``state_dict()["model"]``): a checkpoint saved without optimizer state."""
        ...

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The current weights under Hugging Face names (LoRA: merged), to refit a generation backend."""
        ...

    def hf_model(self) -> torch.nn.Module:
        """A transformers model holding the current weights (LoRA: merged), for the exported artifact."""
        ...

    def save_adapter(self, folder: Path, *, base_model: str | None) -> Path | None:
        """Write the PEFT adapter folder of a LoRA policy and return it; ``None`` (nothing written) otherwise."""
        ...

    def close(self) -> None:
        """Release what the policy holds outside this process (Ray actors, process groups); idempotent."""
        ...
