"""Does the Slurm allocation match ``cluster.num_nodes`` × ``cluster.gpus_per_node``? Checked before Ray starts.

A mismatch (a profile asking for 1 node while the config says 2, GPUs per node differing from the config) would
otherwise surface minutes later as a Ray cluster that never reaches its size, or as a silently smaller run.

Slurm describes the allocation in the job's environment: ``SLURM_JOB_NUM_NODES`` and ``SLURM_JOB_NODELIST``
(compressed, e.g. ``node[01-04]``) for the nodes, ``SLURM_GPUS_ON_NODE`` (or ``SLURM_JOB_GPUS``, a list of GPU
indices, or ``SLURM_GPUS_PER_NODE``) for the GPUs of this node. Nodes of one allocation are assumed alike.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from rlvr.errors import UserError


class TopologyError(UserError):
    """The allocation does not match ``cluster.*``."""


@dataclass(frozen=True)
class Allocation:
    """What Slurm granted this job: ``num_nodes`` hosts, ``gpus_per_node`` GPUs each."""

    job_id: str
    num_nodes: int
    gpus_per_node: int
    nodes: tuple[str, ...]


def expand_nodelist(nodelist: str) -> list[str]:
    """``node[01-03,07],login`` → ``[node01, node02, node03, node07, login]`` (Slurm's hostlist syntax).

    ``scontrol show hostnames`` does the same, but needs a reachable controller; this is pure.
    """
    hosts: list[str] = []
    for match in re.finditer(r"([^,\[]+)(?:\[([^\]]+)\])?(?:,|$)", nodelist.strip()):
        prefix, ranges = match.group(1), match.group(2)
        if not ranges:
            hosts.append(prefix)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            if not hi:
                hosts.append(prefix + lo)
                continue
            width = len(lo)
            hosts.extend(f"{prefix}{i:0{width}d}" for i in range(int(lo), int(hi) + 1))
    return hosts


def _gpus_on_node(env: Mapping[str, str]) -> int:
    if env.get("SLURM_GPUS_ON_NODE"):
        return int(env["SLURM_GPUS_ON_NODE"])
    if env.get("SLURM_JOB_GPUS"):
        return len([g for g in env["SLURM_JOB_GPUS"].split(",") if g.strip()])
    if env.get("SLURM_GPUS_PER_NODE"):
        # "8" or "h100:8"
        return int(env["SLURM_GPUS_PER_NODE"].rsplit(":", 1)[-1])
    return 0


def allocation_from_env(env: Mapping[str, str]) -> Allocation | None:
    """The allocation this process runs in, or ``None`` outside Slurm (no ``SLURM_JOB_ID``)."""
    job_id = env.get("SLURM_JOB_ID")
    if not job_id:
        return None
    nodes = tuple(expand_nodelist(env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""))
    num_nodes = int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or len(nodes) or 1)
    if len(nodes) != num_nodes:
        nodes = tuple(_hostnames_from_scontrol(env.get("SLURM_JOB_NODELIST", ""))) or nodes
    return Allocation(job_id=job_id, num_nodes=num_nodes, gpus_per_node=_gpus_on_node(env), nodes=nodes)


def _hostnames_from_scontrol(nodelist: str) -> list[str]:
    if not nodelist:
        return []
    proc = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True)
    return proc.stdout.split() if proc.returncode == 0 else []


def check_topology(num_nodes: int, gpus_per_node: int, allocation: Allocation) -> None:
    """Raise :class:`TopologyError` unless the allocation has exactly the nodes and GPUs the config asks for."""
    problems = []
    if allocation.num_nodes != num_nodes:
        problems.append(
            f"cluster.num_nodes={num_nodes} but Slurm job {allocation.job_id} has "
            f"{allocation.num_nodes} node(s) ({','.join(allocation.nodes) or 'unknown'})"
        )
    if allocation.gpus_per_node != gpus_per_node:
        problems.append(
            f"cluster.gpus_per_node={gpus_per_node} but each node of Slurm job {allocation.job_id} "
            f"has {allocation.gpus_per_node} GPU(s)"
        )
    if problems:
        raise TopologyError(
            "the Slurm allocation does not match the config: "
            + "; ".join(problems)
            + ". Make the profile's resources for rule rlvr (set-resources: rlvr: nodes / gres) and "
            "cluster.num_nodes / cluster.gpus_per_node agree."
        )


def _gpus_in_resources(resources: dict) -> tuple[int, str] | None:
    """GPUs per node that the Slurm plugin will request for a rule, and the resource that asks for them."""
    gres = str(resources.get("gres") or "")
    for item in filter(None, gres.split(",")):
        parts = item.split(":")
        if parts[0] == "gpu":
            return (int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 1), f"gres: {gres}"
    extra = str(resources.get("slurm_extra") or "")
    found = re.search(r"--gpus-per-node[=\s]+(?:\w+:)?(\d+)", extra)
    if found:
        return int(found.group(1)), f"slurm_extra: {extra}"
    return None


def check_profile_topology(resources: dict, cluster: dict, source: str) -> None:
    """Before submitting: the profile's Slurm request for rule rlvr must give what ``cluster.*`` asks for.

    ``resources`` are the profile's resources for the rule (``default-resources`` overlaid by
    ``set-resources: rlvr:``); the rule itself asks for ``nodes = cluster.num_nodes``, which a profile may
    override. GPUs per node come from ``gres: gpu:N`` or ``slurm_extra: --gpus-per-node=N``.
    """
    want_nodes, want_gpus = int(cluster["num_nodes"]), int(cluster["gpus_per_node"])
    problems = []
    nodes = resources.get("nodes")
    if nodes is not None and int(nodes) != want_nodes:
        problems.append(f"it sets nodes: {nodes} but cluster.num_nodes={want_nodes}")
    gpus = _gpus_in_resources(resources)
    have_gpus, how = gpus if gpus else (0, "no gres: gpu:N")
    if have_gpus != want_gpus:
        problems.append(f"it requests {have_gpus} GPU(s) per node ({how}) but cluster.gpus_per_node={want_gpus}")
    if want_nodes > 1 and "mpi" not in resources:
        problems.append(
            "a multi-node rlvr job needs `mpi: srun` so that the Ray launcher, not the plugin's "
            "single-task srun, places the work on every node"
        )
    if problems:
        raise TopologyError(
            f"{source}, set-resources for rule rlvr: "
            + "; ".join(problems)
            + ". Change the profile or the cluster.* keys so that they agree."
        )
