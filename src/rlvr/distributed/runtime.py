"""What every Ray actor of a run needs: a started Ray, a model built from the run's source, a rendezvous.

A policy source is either a ``checkpoint_megatron`` path (the run's ``policy_path``; every actor converts it
with :func:`rlvr.convert.hf_megatron.load_hf_model_from_megatron`, so replicas start from identical weights) or
a zero-argument callable returning an HF causal LM (tests, or a model built in memory). A callable travels to
the actors with cloudpickle: define it where the actor processes can import it, or nest it in a function so it is
pickled by value.

Rendezvous: rank 0's actor reports its node address and a free TCP port; every rank then joins
``torch.distributed`` with ``tcp://addr:port`` (gloo on CPU, NCCL when the actors hold GPUs).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from rlvr.errors import ConfigError, UserError

ModelSource = str | Path | Callable[[], torch.nn.Module]


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join the cluster that ``RAY_ADDRESS`` names (set by :mod:`rlvr.launch.ray_slurm`), else start a private
    local instance (``address="local"``: never attach to an unrelated Ray found on the machine); no-op if this
    process already did either."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], include_dashboard=False)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)


def cluster_has_gpus() -> bool:
    """Whether the Ray cluster offers any GPU (decides NCCL vs gloo and the actors' GPU requests)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0)) > 0


def resolve_gpus(num_gpus: float | None) -> float:
    """``None`` means one GPU per actor when the cluster has GPUs, else none."""
    if num_gpus is None:
        return 1.0 if cluster_has_gpus() else 0.0
    if num_gpus < 0:
        raise ConfigError(f"num_gpus per worker must be >= 0, got {num_gpus}")
    return float(num_gpus)


# Ray's GPU numbers are bookkeeping, not a memory split: a training rank, its reference rank and a colocated
# generation engine share one physical GPU (their phases take turns), so each asks for a third of it.
COLOCATED_GPU_SHARE = 1 / 3


def device_group(count: int) -> Any:
    """A placement group of ``count`` one-GPU bundles, packed node by node (bundle ``i``: training rank ``i``'s
    device), or None on a cluster without GPUs (CPU actors need no pinning)."""
    import ray
    from ray.util.placement_group import placement_group

    if not cluster_has_gpus():
        return None
    group = placement_group([{"GPU": 1}] * count, strategy="PACK")
    ray.get(group.ready())
    return group


def shared_slot(group: Any, index: int) -> dict[str, Any]:
    """Ray actor options that put an actor on bundle ``index`` of :func:`device_group`'s group, sharing its GPU."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    strategy = PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=index)
    return {"num_cpus": 0, "num_gpus": COLOCATED_GPU_SHARE, "scheduling_strategy": strategy}


def build_model(source: ModelSource, precision: str | None, device: str | torch.device) -> torch.nn.Module:
    """An HF causal LM in eval mode on ``device``: converted from a checkpoint path, or made by ``source()``."""
    if callable(source):
        model = source()
        if not isinstance(model, torch.nn.Module):
            raise UserError(f"the policy model factory returned {type(model).__name__}, not a torch.nn.Module")
    else:
        from rlvr.convert.hf_megatron import load_hf_model_from_megatron

        model = load_hf_model_from_megatron(source, precision)
    return model.to(device).eval()


def load_tokenizer(tokenizer: Any) -> Any:
    """A tokenizer object is used as is; a path (``str``/``Path``) is loaded with ``AutoTokenizer``."""
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(tokenizer))
    return tokenizer


def rendezvous_address() -> tuple[str, int]:
    """This node's IP and a TCP port free right now (called in rank 0's actor)."""
    import ray

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port = int(sock.getsockname()[1])
    return ray.util.get_node_ip_address(), port


def join_process_group(address: str, port: int, rank: int, world_size: int, backend: str) -> None:
    """``torch.distributed.init_process_group`` over TCP; blocks until all ``world_size`` ranks have joined."""
    import torch.distributed as dist

    if backend not in ("gloo", "nccl"):
        raise ConfigError(f"torch.distributed backend {backend!r}; known: ['gloo', 'nccl']")
    if backend == "nccl":
        torch.cuda.set_device(0)  # Ray exposes exactly the actor's own GPU as device 0
    dist.init_process_group(backend, init_method=f"tcp://{address}:{port}", rank=rank, world_size=world_size)


def all_reduce_sum(tensor: torch.Tensor) -> None:
    """In-place SUM over the default process group (the ``all_reduce`` hook of ``HFPolicy``)."""
    import torch.distributed as dist

    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def broadcast_weights(model: torch.nn.Module) -> None:
    """Overwrite every rank's parameters and buffers with rank 0's (like DDP's start), in place."""
    import torch.distributed as dist

    with torch.no_grad():
        for tensor in model.state_dict().values():
            dist.broadcast(tensor, src=0)


def to_cpu(value: Any) -> Any:
    """``value`` with every tensor moved to CPU (nested dicts/lists/tuples), for sending to the driver."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value
