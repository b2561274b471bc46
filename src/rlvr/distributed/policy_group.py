"""Data-parallel policy training: ``W`` Ray actors, the ranks of one FSDP2-sharded HF policy.

Each rank holds a :class:`~rlvr.policy.fsdp.ShardedHFPolicy`: ``1/W`` of the weights, gradients and optimizer
state (``policy.dtensor_cfg.enabled`` with ``W > 1`` ranks, as NeMo-RL's DTensor worker). The semantics are
NeMo-RL's and those of one process (the spec's "Training microbatches"):

* the rollout (``B`` rows, not shuffled) is cut into ``K = B / G`` global batches of ``G`` rows
  (``policy.train_global_batch_size``); rank ``r`` gets rows ``[k·G + r·G/W, k·G + (r+1)·G/W)`` of each
  global batch ``k``, so it runs the same ``K`` optimizer steps on ``G/W`` rows each;
* per global batch, ``N_seq``/``N_tok`` are all-reduced sums over ranks and every rank's loss is divided by
  these global counts, so ``Σ_r ∇L_r`` is the full-batch gradient: FSDP2 reduce-scatters it with SUM (not the
  mean), then the global norm is clipped and every rank steps its shard;
* metrics fold over ranks as :mod:`rlvr.policy.train_metrics` declares: the loss and loss-function metrics are
  summed as over micro-batches (``*_min``/``*_max`` take min/max); grad norm, lr and the global counts are
  identical on every rank and taken from rank 0;
* :meth:`RayPolicyGroup.get_logprobs` splits the rows into ``W`` contiguous chunks and concatenates the
  answers in order.

Every rank converts the same checkpoint (rank 0's weights are broadcast before sharding, DDP's guarantee). Full
weights and optimizer state are gathered by all ranks together and returned by rank 0. On GPUs, rank ``i`` runs
on bundle ``i`` of a placement group of one-GPU bundles (:func:`~rlvr.distributed.runtime.device_group`), which
a frozen reference group and a colocated generation engine share (:mod:`rlvr.launch.placement`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from rlvr.distributed.runtime import (
    ModelSource,
    broadcast_weights,
    build_model,
    device_group,
    ensure_ray,
    join_process_group,
    rendezvous_address,
    resolve_gpus,
    shared_slot,
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
        """Join the group, build the fp32 replica, copy rank 0's weights, then shard it over the ranks."""
        from rlvr.policy.fsdp import ShardedHFPolicy, data_parallel_mesh

        join_process_group(address, port, self.rank, self.world_size, backend)
        model = build_model(self.source, "float32", device)  # the shards are the fp32 masters
        if not trainable:
            model.requires_grad_(False)
        broadcast_weights(model)
        mesh = data_parallel_mesh("cuda" if device == "cuda" else "cpu")
        self.policy = ShardedHFPolicy.from_config(self.policy_cfg, model=model, mesh=mesh)

    def get_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, micro_batch_size: int, filtered: bool
    ) -> torch.Tensor:
        return self.policy.get_logprobs(input_ids, attention_mask, micro_batch_size=micro_batch_size, filtered=filtered)

    def train(
        self, batch: Mapping[str, Any], loss_fn: Any, global_batch_size: int, micro_batch_size: int
    ) -> dict[str, float]:
        return self.policy.train(batch, loss_fn, global_batch_size=global_batch_size, micro_batch_size=micro_batch_size)

    def offload_before_refit(self) -> None:
        self.policy.offload_before_refit()

    def prepare_for_lp_inference(self) -> None:
        self.policy.prepare_for_lp_inference()

    def state_dict(self) -> dict[str, Any] | None:
        """Gathered by every rank (a collective); rank 0 returns it."""
        state = self.policy.state_dict()
        return to_cpu(state) if self.rank == 0 else None

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.policy.load_state_dict(state)

    def load_model_state(self, model_state: Mapping[str, torch.Tensor]) -> None:
        self.policy.load_model_state(dict(model_state))  # through the policy: its fp32 masters follow

    def model_state(self) -> dict[str, torch.Tensor] | None:
        """Gathered by every rank (a collective); rank 0 returns it."""
        state = self.policy.model_state()
        return to_cpu(state) if self.rank == 0 else None

    def close(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class RayPolicyGroup:
    """HFPolicy's interface over ``num_workers`` data-parallel Ray actors; the driver never holds the model.

    ``source``: the ``checkpoint_megatron`` path, or a zero-argument model factory (see
    :mod:`rlvr.distributed.runtime`). ``trainable=False`` builds a frozen group (the reference policy: scoring
    only). ``num_gpus_per_worker=None``: on a cluster with GPUs each rank gets bundle ``r`` of ``devices`` (a
    :func:`~rlvr.distributed.runtime.device_group`; a new one when None) and NCCL, else CPU and gloo. Starts Ray
    if this process has not.
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
        devices: Any = None,
    ):
        if num_workers < 1:
            raise ConfigError(f"cluster.num_workers must be >= 1, got {num_workers}")
        import ray

        ensure_ray()
        self.policy_cfg, self.source, self.num_workers = dict(policy_cfg), source, num_workers
        gpus = resolve_gpus(num_gpus_per_worker)
        self._owns_devices = devices is None and num_gpus_per_worker is None
        self.devices = device_group(num_workers) if self._owns_devices else devices
        actor_cls = ray.remote(PolicyActor)
        self.actors = [
            actor_cls.options(**self._slot(rank, num_cpus_per_worker, gpus)).remote(
                self.policy_cfg, source, rank, num_workers
            )
            for rank in range(num_workers)
        ]
        address, port = ray.get(self.actors[0].address.remote())
        backend, device = ("nccl", "cuda") if gpus > 0 else ("gloo", "cpu")
        ray.get([a.setup.remote(address, port, backend, device, trainable) for a in self.actors])
        self._template: torch.nn.Module | None = None

    def _slot(self, rank: int, num_cpus: float, num_gpus: float) -> dict[str, Any]:
        """Rank ``rank``'s actor options: its bundle of the device group, or plain CPU/GPU counts."""
        if self.devices is not None:
            return shared_slot(self.devices, rank)
        return {"num_cpus": num_cpus, "num_gpus": num_gpus}

    def get_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, micro_batch_size: int, filtered: bool = True
    ) -> torch.Tensor:
        """``[B, S]`` log-probs as :meth:`HFPolicy.get_logprobs`; rows split into contiguous per-rank chunks."""
        import ray

        rows = torch.arange(input_ids.shape[0]).tensor_split(self.num_workers)
        refs = [  # every rank, even one without rows: a sharded forward is a collective
            actor.get_logprobs.remote(input_ids[idx], attention_mask[idx], micro_batch_size, filtered)
            for actor, idx in zip(self.actors, rows)
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

    def offload_before_refit(self) -> None:
        """Every rank hands its optimizer state to host memory while its colocated replica generates (a no-op
        on CPU ranks; see :mod:`rlvr.policy.offload`)."""
        import ray

        ray.get([actor.offload_before_refit.remote() for actor in self.actors])

    def prepare_for_lp_inference(self) -> None:
        import ray

        ray.get([actor.prepare_for_lp_inference.remote() for actor in self.actors])

    def state_dict(self) -> dict[str, Any]:
        """The full model, optimizer and scheduler state (gathered by all ranks), on CPU."""
        import ray

        return ray.get([actor.state_dict.remote() for actor in self.actors])[0]

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
        """The full weights by parameter name in the compute dtype, on CPU (to refit a generation backend)."""
        import ray

        return ray.get([actor.model_state.remote() for actor in self.actors])[0]

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
        if self._owns_devices and self.devices is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.devices)  # close groups and actors sharing it first


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
