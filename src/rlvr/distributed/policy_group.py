"""Data-parallel policy training: ``W`` Ray actors, each holding one :class:`~rlvr.policy.hf.HFPolicy` replica.

The semantics are NeMo-RL's and those of one process (the spec's "Training microbatches"):

* the rollout (``B`` rows, not shuffled) is cut into ``K = B / G`` global batches of ``G`` rows
  (``policy.train_global_batch_size``); rank ``r`` gets rows ``[k·G + r·G/W, k·G + (r+1)·G/W)`` of each
  global batch ``k``, so it runs the same ``K`` optimizer steps on ``G/W`` rows each;
* per global batch, ``N_seq``/``N_tok`` are all-reduced sums over ranks and every rank's loss is divided by
  these global counts, so ``Σ_r ∇L_r`` is the full-batch gradient: gradients are all-reduced with SUM (not the
  mean), then every rank clips the same global norm and takes the same optimizer step;
* metrics fold over ranks as :mod:`rlvr.policy.train_metrics` declares: the loss and loss-function metrics are
  summed as over micro-batches (``*_min``/``*_max`` take min/max); grad norm, lr and the global counts are
  identical on every rank and taken from rank 0;
* :meth:`RayPolicyGroup.get_logprobs` splits the rows into ``W`` contiguous chunks and concatenates the
  answers in order.

Replicas start from the same weights (each converts the same checkpoint, then rank 0's weights are broadcast),
and stay equal because they apply identical gradients; so the model, optimizer and scheduler state of any rank,
here rank 0, is the group's state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from rlvr.distributed.runtime import (
    ModelSource,
    all_reduce_sum,
    broadcast_weights,
    build_model,
    ensure_ray,
    join_process_group,
    rendezvous_address,
    resolve_gpus,
    to_cpu,
)
from rlvr.errors import ConfigError
from rlvr.policy.train_metrics import Fold, fold


class PolicyActor:
    """One data-parallel rank (runs inside a Ray actor process): an HFPolicy joined to the process group."""

    def __init__(self, policy_cfg: Mapping[str, Any], source: ModelSource, rank: int, world_size: int):
        self.policy_cfg, self.source = dict(policy_cfg), source
        self.rank, self.world_size = rank, world_size
        self.policy = None

    def address(self) -> tuple[str, int]:
        return rendezvous_address()

    def setup(self, address: str, port: int, backend: str, device: str, trainable: bool) -> None:
        """Join the group, build the replica, copy rank 0's weights (the same checkpoint, but DDP's guarantee)."""
        from rlvr.policy.hf import HFPolicy

        join_process_group(address, port, self.rank, self.world_size, backend)
        model = build_model(self.source, self.policy_cfg["precision"], device)
        if not trainable:
            model.requires_grad_(False)
        broadcast_weights(model)
        self.policy = HFPolicy.from_config(self.policy_cfg, model=model, all_reduce=all_reduce_sum)

    def get_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, micro_batch_size: int, filtered: bool
    ) -> torch.Tensor:
        return self.policy.get_logprobs(input_ids, attention_mask, micro_batch_size=micro_batch_size, filtered=filtered)

    def train(
        self, batch: Mapping[str, Any], loss_fn: Any, global_batch_size: int, micro_batch_size: int
    ) -> dict[str, float]:
        return self.policy.train(batch, loss_fn, global_batch_size=global_batch_size, micro_batch_size=micro_batch_size)

    def state_dict(self) -> dict[str, Any]:
        return to_cpu(self.policy.state_dict())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state)

    def load_model_state(self, model_state: Mapping[str, torch.Tensor]) -> None:
        self.policy.load_model_state(dict(model_state))  # through the policy: its fp32 masters follow

    def model_state(self) -> dict[str, torch.Tensor]:
        return to_cpu(self.policy.model_state())

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class RayPolicyGroup:
    """HFPolicy's interface over ``num_workers`` data-parallel Ray actors; the driver never holds the model.

    ``source``: the ``checkpoint_megatron`` path, or a zero-argument model factory (see
    :mod:`rlvr.distributed.runtime`). ``trainable=False`` builds a frozen group (the reference policy: scoring
    only). ``num_gpus_per_worker=None`` takes one GPU per actor when the cluster has GPUs (then NCCL), else none
    (gloo). Starts Ray if this process has not.
    """

    def __init__(
        self,
        policy_cfg: Mapping[str, Any],
        source: ModelSource,
        *,
        num_workers: int,
        trainable: bool = True,
        num_cpus_per_worker: float = 1,
        num_gpus_per_worker: float | None = None,
    ):
        if num_workers < 1:
            raise ConfigError(f"cluster.num_workers must be >= 1, got {num_workers}")
        import ray

        ensure_ray()
        self.policy_cfg, self.source, self.num_workers = dict(policy_cfg), source, num_workers
        gpus = resolve_gpus(num_gpus_per_worker)
        actor_cls = ray.remote(PolicyActor).options(num_cpus=num_cpus_per_worker, num_gpus=gpus)
        self.actors = [actor_cls.remote(self.policy_cfg, source, rank, num_workers) for rank in range(num_workers)]
        address, port = ray.get(self.actors[0].address.remote())
        backend, device = ("nccl", "cuda") if gpus > 0 else ("gloo", "cpu")
        ray.get([a.setup.remote(address, port, backend, device, trainable) for a in self.actors])
        self._template: torch.nn.Module | None = None

    def get_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, micro_batch_size: int, filtered: bool = True
    ) -> torch.Tensor:
        """``[B, S]`` log-probs as :meth:`HFPolicy.get_logprobs`; rows split into contiguous per-rank chunks."""
        import ray

        rows = torch.arange(input_ids.shape[0]).tensor_split(self.num_workers)
        refs = [
            actor.get_logprobs.remote(input_ids[idx], attention_mask[idx], micro_batch_size, filtered)
            for actor, idx in zip(self.actors, rows)
            if len(idx)
        ]
        return torch.cat(ray.get(refs))

    def train(
        self, batch: Mapping[str, Any], loss_fn: Any, *, global_batch_size: int, micro_batch_size: int
    ) -> dict[str, float]:
        """:meth:`HFPolicy.train` over the ranks; ``micro_batch_size`` is per rank (as in NeMo-RL)."""
        import ray

        total = int(batch["input_ids"].shape[0])
        if global_batch_size <= 0 or total % global_batch_size or global_batch_size % self.num_workers:
            raise ConfigError(
                f"rollout batch of {total} rows with policy.train_global_batch_size={global_batch_size} and "
                f"cluster.num_workers={self.num_workers}: the rollout must be a multiple of the global batch and "
                f"the global batch a multiple of the number of workers",
                code="rollout_batch_not_divisible",
            )
        loss_ref = ray.put(loss_fn)
        local = global_batch_size // self.num_workers
        refs = [
            actor.train.remote(
                shard_rows(batch, global_batch_size, self.num_workers, rank), loss_ref, local, micro_batch_size
            )
            for rank, actor in enumerate(self.actors)
        ]
        return fold(ray.get(refs), Fold.RANKS)

    def state_dict(self) -> dict[str, Any]:
        """Rank 0's model, optimizer and scheduler state (all ranks hold the same), on CPU."""
        import ray

        return ray.get(self.actors[0].state_dict.remote())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output on every rank."""
        import ray

        ref = ray.put(dict(state))
        ray.get([actor.load_state_dict.remote(ref) for actor in self.actors])

    def load_model_state(self, model_state: Mapping[str, torch.Tensor]) -> None:
        """Load weights only on every rank (a checkpoint saved without optimizer state)."""
        import ray

        ref = ray.put(dict(model_state))
        ray.get([actor.load_model_state.remote(ref) for actor in self.actors])

    def model_state(self) -> dict[str, torch.Tensor]:
        """Rank 0's weights by parameter name, on CPU (to refit a generation backend)."""
        import ray

        return ray.get(self.actors[0].model_state.remote())

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """Same as :meth:`model_state`: the HF-named weights of the current policy."""
        return self.model_state()

    def hf_model(self) -> torch.nn.Module:
        """A CPU HF model with the current weights (for the final artifact), built here from the same source."""
        if self._template is None:
            self._template = build_model(self.source, self.policy_cfg["precision"], "cpu")
        self._template.load_state_dict(self.hf_state_dict())
        return self._template

    def save_adapter(self, folder, *, base_model: str | None) -> None:
        """Nothing: LoRA runs in one process (``check_lora_config`` refuses it with several workers)."""
        return None

    def close(self) -> None:
        """Leave the process group and stop the actors (Ray itself keeps running)."""
        import ray

        ray.get([actor.close.remote() for actor in self.actors])
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []


def shard_rows(batch: Mapping[str, Any], global_batch_size: int, num_workers: int, rank: int) -> dict[str, Any]:
    """Rank ``rank``'s rows: slice ``r`` of ``W`` equal contiguous slices of each global batch, in order.

    Tensors with ``B`` rows (``B = len(input_ids)``) become ``[K·G/W, ...]`` with ``K = B/G``; other values
    (scalars, 0-d tensors, tensors of another length) are passed through.
    """
    total = int(batch["input_ids"].shape[0])
    steps, local = total // global_batch_size, global_batch_size // num_workers
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == total:
            rest = value.shape[1:]
            value = value.reshape(steps, num_workers, local, *rest)[:, rank].reshape(steps * local, *rest)
        out[key] = value
    return out
