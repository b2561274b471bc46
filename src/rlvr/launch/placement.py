"""Which process of an rlvr job runs on which node and device, decided from ``cluster.*`` and the policy config.

One plan serves three readers: ``nemotron steps run ... -d`` prints it (and refuses a bad one before anything
is queued), the rlvr rule takes the job's nodes and GPUs from it (so the Slurm and Lepton job specs ask for
exactly what it uses), and the trainer (:class:`rlvr.grpo.roles.PolicyWorkers`) places its workers as it says.

The rules (README "Topology"):

* **Training ranks.** One data-parallel policy rank per training device: every GPU of ``cluster.gpus_per_node ×
  cluster.num_nodes`` (less the generation GPUs when generation is not colocated), or ``cluster.num_workers ×
  num_nodes`` processes on a CPU run. With the PyTorch/HF backend (``policy.dtensor_cfg.enabled``) more than one
  rank trains FSDP2-sharded (:mod:`rlvr.policy.fsdp`); the megatron-core backend trains in one process on one
  device, so asking it for more is refused. The reference policy, when the KL weight is > 0, has one frozen rank
  beside each training rank.
* **Generation** (``policy.generation.colocated.enabled``). Colocated (NeMo-RL's default): one generation
  replica per training device, sharing it with that rank; training and generation take turns, so a replica costs
  memory, not a device. One process on one device samples from the trained model itself (no copy, no refit).
  Not colocated: generation gets devices of its own (``colocated.resources.gpus_per_node`` on a one-node job;
  ``colocated.resources.num_nodes`` whole nodes of a multi-node job, as NeMo-RL splits them), one replica each,
  and training gets the rest. Prompts are spread over the replicas; every replica is refitted after each step.
* **Rewards.** The verifier processes (``env.<task>.num_workers``) or the NeMo-Gym servers run on node 0 beside the
  driver, on CPU.
* **Ray.** A job with more than one process holding a model (ranks, a generation actor) starts Ray; its head
  is on node 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlvr.config.facts import needs_reference_model
from rlvr.errors import ConfigError

GEN_KEY = "policy.generation.colocated"


class PlacementError(ConfigError):
    """The config asks for a layout that over-subscribes a device or leaves requested devices unused."""


@dataclass(frozen=True)
class Slot:
    """One process (or a group of them, for rewards) and where it runs; ``device`` is ``cuda:i`` or ``cpu``."""

    role: str
    node: int
    device: str


@dataclass(frozen=True)
class PlacementPlan:
    """The job's shape (what Slurm/Lepton allocate) and every process's slot in it."""

    num_nodes: int
    gpus_per_node: int
    train_ranks: int
    colocated: bool
    uses_ray: bool
    slots: tuple[Slot, ...]

    @property
    def total_gpus(self) -> int:
        return self.num_nodes * self.gpus_per_node

    def devices(self, role_prefix: str) -> list[tuple[int, str]]:
        """``(node, device)`` of every slot whose role starts with ``role_prefix``, in plan order."""
        return [(s.node, s.device) for s in self.slots if s.role.startswith(role_prefix)]

    def lines(self) -> list[str]:
        """The plan as printed at ``-d``: one line per device, listing what runs there."""
        kind = f"{self.gpus_per_node} GPU(s)" if self.gpus_per_node else "CPU only"
        mode = "colocated" if self.colocated else "on its own device(s)"
        replicas = len(self.devices("generation"))
        out = [
            f"  job: {self.num_nodes} node(s) x {kind}; {self.train_ranks} training rank(s); "
            f"{replicas} generation engine(s), {mode}"
        ]
        by_place: dict[tuple[int, str], list[str]] = {}
        for slot in self.slots:
            by_place.setdefault((slot.node, slot.device), []).append(slot.role)
        for (node, device), roles in sorted(by_place.items(), key=lambda kv: (kv[0][0], _device_order(kv[0][1]))):
            out.append(f"  node {node} {device:<7} {', '.join(roles)}")
        return out


def _device_order(device: str) -> tuple[int, int]:
    return (1, 0) if device == "cpu" else (0, int(device.split(":")[1]))


def plan_placement(cfg: dict[str, Any]) -> PlacementPlan:
    """The placement of a validated rlvr config; :class:`PlacementError` names the keys to change."""
    cluster, policy = cfg["cluster"], cfg["policy"]
    nodes, gpus = int(cluster["num_nodes"]), int(cluster["gpus_per_node"])
    colocated = bool(policy["generation"]["colocated"]["enabled"])
    if gpus == 0:
        if not colocated:
            raise PlacementError(
                f"{GEN_KEY}.enabled=false gives generation GPUs of its own, but cluster.gpus_per_node=0 (a CPU "
                f"run); set {GEN_KEY}.enabled=true or give the job GPUs"
            )
        train = [(node, "cpu") for node in range(nodes) for _ in range(int(cluster["num_workers"]))]
        generation = list(train)
    else:
        train, generation = _gpu_split(nodes, gpus, colocated, policy["generation"]["colocated"]["resources"])
    _check_backend(policy, len(train), colocated)
    uses_ray = len(train) > 1 or not colocated or nodes > 1
    slots = [Slot("policy rank 0" if len(train) == 1 else f"policy rank {r}", n, d) for r, (n, d) in enumerate(train)]
    if needs_reference_model(cfg):
        slots += [Slot(f"reference rank {r}", n, d) for r, (n, d) in enumerate(train)]
    backend = policy["generation"]["backend"]
    if _in_process(policy, train):
        slots.append(Slot(f"generation ({backend}, samples with the policy model)", *generation[0]))
    elif len(train) == 1 and colocated:  # one process: its vLLM engine beside the policy
        slots.append(Slot(f"generation ({backend})", *generation[0]))
    else:
        slots += [Slot(f"generation replica {i} ({backend})", n, d) for i, (n, d) in enumerate(generation)]
    if uses_ray:
        slots.append(Slot("ray head", 0, "cpu"))
    slots.append(Slot(_reward_role(cfg["env"]), 0, "cpu"))
    return PlacementPlan(nodes, gpus, len(train), colocated, uses_ray, tuple(slots))


def _in_process(policy: dict[str, Any], train: list[tuple[int, str]]) -> bool:
    """One HF rank with colocated generation: the sampler uses the policy's own model (no refit, no copy); the
    megatron-core policy and LoRA sample from an HF copy instead."""
    generation = policy["generation"]
    return (
        len(train) == 1
        and generation["backend"] == "hf"
        and generation["colocated"]["enabled"]
        and not (policy["megatron_cfg"]["enabled"] or policy["dtensor_cfg"]["lora_cfg"]["enabled"])
    )


def _gpu_split(
    nodes: int, gpus: int, colocated: bool, resources: dict[str, Any]
) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """Training and generation devices of a GPU job."""
    every = [(node, f"cuda:{i}") for node in range(nodes) for i in range(gpus)]
    if colocated:
        return every, list(every)
    gen_gpus, gen_nodes = resources["gpus_per_node"], resources["num_nodes"]
    if nodes == 1:
        if gen_nodes not in (None, 1) or gen_gpus is None:
            raise PlacementError(
                f"{GEN_KEY}.enabled=false on a one-node job: set {GEN_KEY}.resources.gpus_per_node (the node's "
                f"GPUs given to generation, fewer than cluster.gpus_per_node={gpus}) and "
                f"{GEN_KEY}.resources.num_nodes to null or 1"
            )
        if not 0 < gen_gpus < gpus:
            raise PlacementError(
                f"{GEN_KEY}.resources.gpus_per_node={gen_gpus} must leave training at least one of the node's "
                f"cluster.gpus_per_node={gpus} GPUs (and give generation at least one)"
            )
        split = gpus - gen_gpus
        train, generation = every[:split], every[split:]
    else:
        if gen_nodes is None or not 0 < gen_nodes < nodes:
            raise PlacementError(
                f"{GEN_KEY}.enabled=false on a {nodes}-node job gives generation whole nodes: set "
                f"{GEN_KEY}.resources.num_nodes between 1 and {nodes - 1}"
            )
        train, generation = every[: (nodes - gen_nodes) * gpus], every[(nodes - gen_nodes) * gpus :]
    return train, generation


def _check_backend(policy: dict[str, Any], ranks: int, colocated: bool) -> None:
    """The megatron-core policy and LoRA train in one process: more ranks would leave devices unused."""
    single = None
    if policy["megatron_cfg"]["enabled"]:
        single = "policy.megatron_cfg.enabled (the megatron-core backend trains in one process)"
    elif policy["dtensor_cfg"]["lora_cfg"]["enabled"]:
        single = "policy.dtensor_cfg.lora_cfg.enabled (LoRA trains in one process)"
    if single and ranks > 1:
        raise PlacementError(
            f"{single}, but cluster.* gives training {ranks} devices: {ranks - 1} would stay unused; set "
            "cluster.gpus_per_node=1 and cluster.num_nodes=1 (cluster.num_workers=1 on CPU), or use the "
            "PyTorch/HF backend, which shards over every device"
        )
    if single and not colocated:
        raise PlacementError(f"{single} generates in its own process: set {GEN_KEY}.enabled=true")


def _reward_role(env: dict[str, Any]) -> str:
    if env["should_use_nemo_gym"]:
        return "rewards (NeMo-Gym resource servers)"
    counts = [f"{task} x{env[task]['num_workers']}" for task in ("math", "code") if task in env]
    return f"rewards (verifier processes: {', '.join(counts)})"
