"""The topology checks: a Slurm allocation (from its environment) and a profile's request against cluster.*."""

from __future__ import annotations

import pytest

from rlvr.launch.topology import (
    Allocation,
    TopologyError,
    allocation_from_env,
    check_profile_topology,
    check_topology,
    expand_nodelist,
)


@pytest.mark.parametrize(
    "nodelist,hosts",
    [
        ("localhost", ["localhost"]),
        ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
        ("gpu[8-10],login", ["gpu8", "gpu9", "gpu10", "login"]),
        ("a1,b2", ["a1", "b2"]),
    ],
)
def test_expand_nodelist(nodelist, hosts):
    """Slurm's compressed host lists expand in order, zero padding kept."""
    assert expand_nodelist(nodelist) == hosts


def test_allocation_from_a_batch_step_environment():
    """The numbers Slurm exports in a job: nodes, node names and GPUs on this node."""
    env = {
        "SLURM_JOB_ID": "42",
        "SLURM_JOB_NUM_NODES": "2",
        "SLURM_JOB_NODELIST": "dgx[01-02]",
        "SLURM_GPUS_ON_NODE": "8",
    }
    assert allocation_from_env(env) == Allocation(job_id="42", num_nodes=2, gpus_per_node=8, nodes=("dgx01", "dgx02"))


@pytest.mark.parametrize(
    "gpu_env,gpus",
    [
        ({"SLURM_JOB_GPUS": "0,1,2,3"}, 4),
        ({"SLURM_GPUS_PER_NODE": "h100:8"}, 8),
        ({}, 0),
    ],
)
def test_gpus_per_node_fallbacks(gpu_env, gpus):
    env = {"SLURM_JOB_ID": "1", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "n1", **gpu_env}
    assert allocation_from_env(env).gpus_per_node == gpus


def test_outside_slurm_there_is_no_allocation():
    assert allocation_from_env({"PATH": "/bin"}) is None


def test_matching_allocation_passes_and_mismatches_name_both_numbers():
    """Both node count and GPUs per node must equal cluster.*; the error names each side."""
    alloc = Allocation(job_id="7", num_nodes=1, gpus_per_node=4, nodes=("n1",))
    check_topology(1, 4, alloc)
    with pytest.raises(TopologyError) as err:
        check_topology(2, 8, alloc)
    msg = str(err.value)
    assert "cluster.num_nodes=2 but Slurm job 7 has 1 node(s) (n1)" in msg
    assert "cluster.gpus_per_node=8 but each node of Slurm job 7 has 4 GPU(s)" in msg


def test_profile_request_must_match_the_config():
    """gres gpu:N (or --gpus-per-node) and nodes of the profile's rlvr resources against cluster.*."""
    cluster = {"num_nodes": 2, "gpus_per_node": 8}
    check_profile_topology({"gres": "gpu:8", "mpi": "srun"}, cluster, "p.yaml")
    check_profile_topology(
        {"slurm_extra": "--gpus-per-node=h100:8 --exclusive", "mpi": "srun", "nodes": 2}, cluster, "p.yaml"
    )
    check_profile_topology({"slurm_partition": "cpu"}, {"num_nodes": 1, "gpus_per_node": 0}, "p.yaml")
    with pytest.raises(
        TopologyError,
        match=r"requests 8 GPU\(s\) per node \(gres: gpu:8\) but "
        r"cluster.gpus_per_node=0",
    ):
        check_profile_topology({"gres": "gpu:8"}, {"num_nodes": 1, "gpus_per_node": 0}, "p.yaml")
    with pytest.raises(TopologyError, match="sets nodes: 1 but cluster.num_nodes=2"):
        check_profile_topology({"gres": "gpu:8", "nodes": 1, "mpi": "srun"}, cluster, "p.yaml")
    with pytest.raises(TopologyError, match="needs `mpi: srun`"):
        check_profile_topology({"gres": "gpu:8"}, cluster, "p.yaml")
