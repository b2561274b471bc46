"""Sharded data-parallel training of the HF policy with PyTorch's FSDP2 (``fully_shard`` over a 1-D device mesh).

``policy.dtensor_cfg.enabled`` with more than one data-parallel rank (``cluster.gpus_per_node × num_nodes``, or
``cluster.num_workers × num_nodes`` on CPU) trains this way, as NeMo-RL's DTensor worker does. Each rank holds
``1/W`` of every parameter (dim-0 shards), of its gradient and of the AdamW state; a forward or backward of one
decoder layer all-gathers that layer's weights and frees them after use.

The training semantics are :class:`~rlvr.policy.hf.HFPolicy`'s with ``W`` ranks (its module docstring): every
rank's loss is divided by the *global* ``N_seq``/``N_tok`` (all-reduced), so the gradient of the global batch is
the SUM of the ranks' gradients. FSDP2 averages by default; :func:`shard_model` sets its divide factor to 1, so
the reduce-scatter after each micro-batch's backward sums instead, into the fp32 sharded ``grad``.

Mixed precision (:mod:`rlvr.policy.precision`): the sharded parameters are the fp32 master weights (the
optimizer and its state are fp32); ``policy.precision`` is FSDP2's ``param_dtype``, so every forward computes
with compute-dtype weights, and gradients are reduced in fp32 (``reduce_dtype``). Same scheme as the
single-process policy (bf16 model + fp32 masters), with the masters sharded.

Every collective needs every rank: forwards (log-probs and training) run the same number of times on each rank,
and the full weights for a checkpoint, an export or a generation refit are gathered on all ranks together
(:meth:`ShardedHFPolicy.state_dict`, :meth:`~ShardedHFPolicy.model_state`); the gathered state is in the
single-process policy's format, so a checkpoint resumes with any number of ranks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from rlvr.errors import CheckpointError, ConfigError
from rlvr.policy import lora
from rlvr.policy.activations import decoder_layers
from rlvr.policy.hf import HFPolicy
from rlvr.policy.precision import parse_precision


def data_parallel_mesh(device_type: str) -> DeviceMesh:
    """A 1-D mesh ``("dp",)`` over every rank of the default process group (already initialised)."""
    return init_device_mesh(device_type, (dist.get_world_size(),), mesh_dim_names=("dp",))


def shard_model(model: torch.nn.Module, mesh: DeviceMesh, compute_dtype: torch.dtype) -> torch.nn.Module:
    """``fully_shard`` each decoder layer, then the whole model (embeddings, final norm, output layer), in place.

    ``model`` must hold fp32 weights (they become the sharded masters). Per-layer units keep one layer's full
    weights alive at a time; the root unit holds the rest. Gradients are summed, not averaged (module docstring).
    """
    if any(p.dtype != torch.float32 for p in model.parameters()):
        raise ConfigError("sharded training needs the model in float32 (the shards are the fp32 master weights)")
    precision = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=precision)
    fully_shard(model, mesh=mesh, mp_policy=precision)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            # Factor 1 alone would pick NCCL's PREMUL_SUM(1), which gloo lacks; a plain SUM is the same sum.
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)
    return model


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor (all-gathered from the ranks when it is a shard), detached."""
    return tensor.full_tensor().detach() if isinstance(tensor, DTensor) else tensor.detach()


class ShardedHFPolicy(HFPolicy):
    """:class:`HFPolicy` whose model, gradients and optimizer state are FSDP2 shards over the ``dp`` mesh.

    ``model``: the fp32 HF causal LM, identical on every rank (same checkpoint), on this rank's device;
    ``compute_dtype``: ``policy.precision``. Every rank must call every method together (module docstring).
    """

    def __init__(self, model: torch.nn.Module, *, mesh: DeviceMesh, compute_dtype: torch.dtype, **kwargs: Any):
        if kwargs.get("logprob_chunk_size"):
            # The chunked path calls the decoder without the root module, whose unit holds the final norm.
            raise ConfigError(
                "policy.logprob_chunk_size is not supported with sharded data-parallel training "
                "(more than one policy rank); set policy.logprob_chunk_size: null or use one rank"
            )
        self.mesh = mesh
        self.compute_dtype = compute_dtype
        shard_model(model, mesh, compute_dtype)
        super().__init__(model, all_reduce=self._all_reduce_sum, **kwargs)

    @classmethod
    def from_config(cls, policy_cfg: Mapping[str, Any], *, model: torch.nn.Module, mesh: DeviceMesh) -> ShardedHFPolicy:
        """Build from the ``policy`` section over ``model`` (fp32, on this rank's device)."""
        if lora.lora_settings(policy_cfg) is not None:
            raise ConfigError(
                "policy.dtensor_cfg.lora_cfg.enabled trains in one process; set it to false or use one "
                "data-parallel rank (cluster.gpus_per_node x num_nodes = 1, or cluster.num_workers = 1 on CPU)"
            )
        return cls(
            model,
            mesh=mesh,
            compute_dtype=parse_precision(policy_cfg["precision"]),
            **cls.settings_from_config(policy_cfg, model),
        )

    def _all_reduce_sum(self, tensor: torch.Tensor) -> None:
        """In-place SUM over the mesh's ranks (the global token and sequence counts)."""
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.mesh.get_group())

    def _reduce_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Nothing to do: each backward already reduce-scattered (summed) the gradients into the shards."""

    @torch.no_grad()
    def get_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, micro_batch_size: int, filtered: bool = True
    ) -> torch.Tensor:
        """:meth:`HFPolicy.get_logprobs` over this rank's rows (possibly none); ranks with fewer micro-batches
        run forwards on one padding row until every rank has run as many (each forward all-gathers weights)."""
        local = -(-int(input_ids.shape[0]) // micro_batch_size)
        most = torch.tensor(local, device=self.device)
        dist.all_reduce(most, op=dist.ReduceOp.MAX, group=self.mesh.get_group())
        out = (
            super().get_logprobs(input_ids, attention_mask, micro_batch_size=micro_batch_size, filtered=filtered)
            if local
            else torch.zeros(input_ids.shape, dtype=torch.float32)
        )
        pad_ids = torch.zeros((1, max(int(input_ids.shape[-1]), 1)), dtype=torch.long, device=self.device)
        for _ in range(int(most) - local):
            self._scores(pad_ids, torch.ones_like(pad_ids), filtered)
        return out

    def _full_weights(self) -> dict[str, torch.Tensor]:
        """The fp32 full weights by parameter name, gathered on every rank (one tensor at a time)."""
        return {name: _full(t) for name, t in self.model.state_dict().items()}

    def model_state(self) -> dict[str, torch.Tensor]:
        """Full weights in the compute dtype (what generation samples with), gathered on every rank."""
        return {name: t.to(self.compute_dtype) for name, t in self._full_weights().items()}

    def state_dict(self) -> dict[str, Any]:
        """The single-process policy's checkpoint, gathered on every rank: the model in the compute dtype, the
        fp32 masters of its non-fp32 parameters, and the full optimizer and scheduler state."""
        full = self._full_weights()
        self.prepare_for_training()  # gathering offloaded shards would mix host and device tensors
        trainable = {name for name, _ in self.master.named_parameters()}
        low_precision = self.compute_dtype != torch.float32
        optim = self.optimizer.state_dict() if self.optimizer is not None else None
        if optim is not None:
            optim = {
                "state": {i: {k: _full(v) for k, v in s.items()} for i, s in optim["state"].items()},
                "param_groups": optim["param_groups"],
            }
        return {
            "model": {name: t.to(self.compute_dtype) for name, t in full.items()},
            "master_weights": {n: t for n, t in full.items() if n in trainable} if low_precision else {},
            "optimizer": optim,
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a full :meth:`state_dict` (saved with any number of ranks) into this rank's shards."""
        if (state.get("scheduler") is None) != (self.scheduler is None):
            raise CheckpointError("checkpoint scheduler state does not match policy.scheduler (one is null)")
        self.prepare_for_training()  # the loaded state replaces the entries an offload would bring back
        self.load_model_state({**state["model"], **(state.get("master_weights") or {})})
        if self.optimizer is not None:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            optim = state["optimizer"]
            self.optimizer.load_state_dict(
                {
                    "state": {i: self._shard_state(s, params[int(i)]) for i, s in optim["state"].items()},
                    "param_groups": optim["param_groups"],
                }
            )
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    @staticmethod
    def _shard_state(entry: Mapping[str, Any], param: torch.nn.Parameter) -> dict[str, Any]:
        """One parameter's optimizer state, its full tensors cut into the parameter's shard."""
        return {
            key: _shard_like(value, param)
            if isinstance(value, torch.Tensor) and tuple(value.shape) == tuple(param.shape)
            else value
            for key, value in entry.items()
        }

    @torch.no_grad()
    def load_model_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Full weights (any dtype; bf16 ones are widened, so prefer the fp32 masters where saved) into the shards."""
        own = self.model.state_dict()
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or extra:
            raise CheckpointError(
                f"checkpoint weights do not match the policy (missing {missing[:5]}, unexpected {extra[:5]})"
            )
        for name, tensor in own.items():
            source = state[name]
            if tuple(source.shape) != tuple(tensor.shape):
                raise CheckpointError(
                    f"checkpoint weight {name!r} has shape {tuple(source.shape)}, the policy {tuple(tensor.shape)}"
                )
            target = tensor.to_local() if isinstance(tensor, DTensor) else tensor
            target.copy_(_shard_like(source, tensor).to_local() if isinstance(tensor, DTensor) else source)

    def hf_model(self) -> torch.nn.Module:
        raise NotImplementedError("a sharded policy has no whole model: export from model_state() (all ranks)")


def _shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``full`` cut into the shard ``like`` holds (same mesh and placements), in ``like``'s dtype and device."""
    if not isinstance(like, DTensor):
        return full.to(device=like.device, dtype=like.dtype)
    source = full.to(device=like.to_local().device, dtype=like.dtype)
    return distribute_tensor(source, like.device_mesh, like.placements)
