"""The training half of :class:`~rlvr.policy.hf.HFPolicy`: optimizer steps over micro-batches, gradient sums.

:class:`TrainingLoop` holds ``train`` (``K = B / global_batch_size`` optimizer steps, one scheduler step) and the
global-batch step (count, accumulate micro-batch gradients, sum over ranks, clip, step); the semantics are in
:mod:`rlvr.policy.hf`'s module docstring. It trains through what the policy class provides: ``optimizer``,
``scheduler``, ``master`` (fp32 masters), ``all_reduce``, ``max_grad_norm``, ``share_prompts``, ``pack``,
``sequence_multiple``, ``device``, ``prepare_for_training`` and the scoring passes ``_scores``,
``_shared_prompt_scores``, ``_packed_scores``, ``_predicted``. :func:`sum_gradients` is the data-parallel
gradient SUM (re-exported by :mod:`rlvr.policy.hf`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from rlvr.errors import ConfigError
from rlvr.policy.base import LossFunction
from rlvr.policy.batching import length_order, select_rows, trim_columns, used_width
from rlvr.policy.logprobs import mask_filtered_tokens
from rlvr.policy.packing import is_right_padded
from rlvr.policy.prefix import group_order, prompt_lengths
from rlvr.policy.train_metrics import Fold, fold

AllReduce = Callable[[torch.Tensor], None]  # in-place SUM of a tensor over the data-parallel ranks


class TrainingLoop:
    """``train`` and its optimizer step, mixed into :class:`~rlvr.policy.hf.HFPolicy` (see the module docstring)."""

    def train(
        self, batch: Mapping[str, Any], loss_fn: LossFunction, *, global_batch_size: int, micro_batch_size: int
    ) -> dict[str, float]:
        """K = B / global_batch_size optimizer steps and one scheduler step; returns the step's metrics.

        ``batch`` holds ``input_ids``, ``attention_mask``, ``token_mask`` ``[B, S]``, ``sample_mask`` ``[B]`` and
        whatever ``loss_fn`` reads (``prev_logprobs``, ``generation_logprobs``, ``reference_policy_logprobs``,
        ``advantages``, all ``[B, S]`` aligned with the log-probs); every tensor with ``B`` rows is sliced per
        micro-batch. ``loss_fn(lp[b, S], data, N_seq, N_tok) -> (loss, metrics)``. A token the filtered
        distribution excludes gets lp 0 and is removed from that micro-batch's ``token_mask``.

        Metrics (folded as :mod:`rlvr.policy.train_metrics` declares): ``loss`` and the loss_fn metrics summed
        over micro-batches and averaged over global batches; ``grad_norm`` (pre-clip) of the last optimizer step;
        ``lr`` used; ``global_valid_seqs``/``global_valid_toks`` averaged; ``num_optimizer_steps`` = K.
        """
        if self.optimizer is None:
            raise ConfigError("this policy has no trainable parameters (a frozen reference policy): it cannot train")
        total = int(batch["input_ids"].shape[0])
        if global_batch_size <= 0 or total % global_batch_size:
            raise ConfigError(
                f"rollout batch of {total} rows is not a multiple of policy.train_global_batch_size="
                f"{global_batch_size}",
                code="rollout_batch_not_divisible",
            )
        if micro_batch_size <= 0:
            raise ConfigError(f"policy.train_micro_batch_size must be >= 1, got {micro_batch_size}")
        self.prepare_for_training()
        lr = float(self.optimizer.param_groups[0]["lr"])
        per_step = [
            self._optimizer_step(_rows(batch, start, start + global_batch_size, total), loss_fn, micro_batch_size)
            for start in range(0, total, global_batch_size)
        ]
        if self.scheduler is not None:
            self.scheduler.step()
        metrics = fold(per_step, Fold.OPTIMIZER_STEPS)
        metrics.update(lr=lr, num_optimizer_steps=float(len(per_step)))
        return metrics

    def _optimizer_step(self, data: dict[str, Any], loss_fn: LossFunction, micro_batch_size: int) -> dict[str, float]:
        """One global batch: accumulate micro-batch gradients, clip, step. Returns its summed metrics."""
        data = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in data.items()}
        rows, seq = data["input_ids"].shape
        sample_mask = data["sample_mask"]
        global_valid_seqs = sample_mask.sum()
        global_valid_toks = (data["token_mask"][:, 1:] * sample_mask.unsqueeze(-1)).sum()
        if self.all_reduce is not None:
            self.all_reduce(global_valid_seqs)
            self.all_reduce(global_valid_toks)
        self.master.zero_grad()
        self.optimizer.zero_grad(set_to_none=True)
        per_micro_batch: list[dict[str, Any]] = []
        # Each prompt's rows together, whose prompt then runs once per micro-batch (policy.prefix), else the
        # shortest rows first, each micro-batch on its own width (policy.batching): the same gradient sum.
        data["prompt_len"] = prompt_lengths(data["token_mask"], data["attention_mask"])
        order = (
            group_order(data["input_ids"], data["attention_mask"], data["prompt_len"]) if self.share_prompts else None
        )
        data = select_rows(data, length_order(data["attention_mask"]) if order is None else order, rows)
        pack = self.pack and is_right_padded(data["attention_mask"])
        for start in range(0, rows, micro_batch_size):
            mb = _rows(data, start, start + micro_batch_size, rows)
            mb = trim_columns(mb, used_width(mb["attention_mask"], self.sequence_multiple), seq)
            prompt_len = mb.pop("prompt_len")
            if pack:
                scores = self._packed_scores(mb["input_ids"], mb["attention_mask"], prompt_len)
            elif order is None:
                scores = self._scores(mb["input_ids"], mb["attention_mask"], filtered=True)
            else:
                scores = self._shared_prompt_scores(mb["input_ids"], mb["attention_mask"], prompt_len)
            lp, mb["token_mask"] = mask_filtered_tokens(scores, mb["token_mask"])
            lp = torch.where(self._predicted(mb["attention_mask"]), lp, torch.zeros_like(lp))
            loss, loss_metrics = loss_fn(lp, mb, global_valid_seqs, global_valid_toks)
            loss.backward()
            self.master.accumulate_grads()  # fp32 sum over micro-batches
            per_micro_batch.append({**loss_metrics, "loss": loss.detach()})
        params = [p for group in self.optimizer.param_groups for p in group["params"]]  # the fp32 masters
        self._reduce_gradients(params)
        max_norm = self.max_grad_norm if self.max_grad_norm else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)  # returns the norm before clipping
        self.optimizer.step()
        self.master.copy_to_model()
        summed = fold(per_micro_batch, Fold.MICRO_BATCHES)
        summed.update(
            grad_norm=float(grad_norm),
            global_valid_seqs=float(global_valid_seqs),
            global_valid_toks=float(global_valid_toks),
        )
        return summed

    def _reduce_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the masters' gradients over the data-parallel ranks (no-op in one process)."""
        if self.all_reduce is not None:
            sum_gradients(params, self.all_reduce)


def sum_gradients(params: list[torch.nn.Parameter], all_reduce: AllReduce, bucket_numel: int = 1 << 24) -> None:
    """Replace each ``p.grad`` by its SUM over the ranks (not the mean: the losses carry the global counts).

    A parameter that got no gradient on any rank keeps ``grad=None`` (the optimizer then skips it, as in one
    process); one that got a gradient on some rank only is zero-filled elsewhere first. Gradients travel in flat
    buckets of about ``bucket_numel`` elements per dtype, so a model with hundreds of tensors costs a few calls.
    """
    if not params:
        return
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=params[0].device)
    all_reduce(has_grad)
    reduced = [p for p, count in zip(params, has_grad.tolist()) if count > 0]
    for p in reduced:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for p in reduced:
        by_dtype.setdefault(p.grad.dtype, []).append(p.grad)
    for grads in by_dtype.values():
        bucket: list[torch.Tensor] = []
        size = 0
        for i, grad in enumerate(grads):
            bucket.append(grad)
            size += grad.numel()
            if size >= bucket_numel or i == len(grads) - 1:
                _reduce_bucket(bucket, all_reduce)
                bucket, size = [], 0


def _reduce_bucket(grads: list[torch.Tensor], all_reduce: AllReduce) -> None:
    """One collective for several same-dtype gradients: flatten, reduce, copy back."""
    flat = torch.cat([g.reshape(-1) for g in grads])
    all_reduce(flat)
    for grad, chunk in zip(grads, flat.split([g.numel() for g in grads])):
        grad.copy_(chunk.view_as(grad))


def _rows(data: Mapping[str, Any], start: int, stop: int, total: int) -> dict[str, Any]:
    """Rows ``start:stop`` of every tensor with ``total`` rows; other values are passed through."""
    return {
        k: v[start:stop] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == total else v
        for k, v in data.items()
    }
