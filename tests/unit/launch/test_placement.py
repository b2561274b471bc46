"""Placement plans of the shipped step configs on a 1x8, a 2x8 and a CPU-only job, and the refusals.

Each refusal must name the keys that fix it; each accepted plan must use every requested device exactly as a
training device (plus generation devices when generation is not colocated), and no device twice for training.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from rlvr.config import load_step_config
from rlvr.errors import ConfigError
from rlvr.launch.placement import PlacementError, plan_placement
from rlvr.steps.index import resolve_step
from tests.conftest import nemotron_env

STEP = resolve_step("rl/nemo_rl/rlvr")
DATA = ["data.train.data_path=/data/train.jsonl", "data.validation.data_path=/data/val.jsonl"]


def plan(config: str, *overrides: str):
    data = DATA if config == "default" else []
    return plan_placement(load_step_config(STEP, config, [*data, *overrides]).engine_view())


def roles_at(p, node: int, device: str) -> list[str]:
    return [s.role for s in p.slots if (s.node, s.device) == (node, device)]


def test_default_1x8_trains_on_every_gpu_with_colocated_generation():
    """-c default (8 GPUs, vLLM): 8 sharded training ranks on cuda:0..7, a vLLM replica beside each."""
    p = plan("default")
    assert (p.num_nodes, p.gpus_per_node, p.train_ranks, p.total_gpus) == (1, 8, 8, 8)
    assert p.devices("policy rank") == [(0, f"cuda:{i}") for i in range(8)]
    assert p.devices("generation") == p.devices("policy rank")
    assert roles_at(p, 0, "cuda:3") == ["policy rank 3", "generation replica 3 (vllm)"]
    assert p.uses_ray and p.devices("ray head") == [(0, "cpu")]
    text = "\n".join(p.lines())
    assert "8 training rank(s); 8 generation engine(s), colocated" in text and "node 0 cuda:7" in text


def test_2x8_spreads_ranks_over_both_nodes():
    """2 nodes x 8 GPUs: 16 ranks, node-major; the Ray head and the rewards on node 0."""
    p = plan("default", "cluster.num_nodes=2")
    assert p.train_ranks == 16 and p.total_gpus == 16
    assert p.devices("policy rank")[8] == (1, "cuda:0")
    assert p.devices("ray head") == [(0, "cpu")]
    assert [s.node for s in p.slots if s.role.startswith("rewards")] == [0]


def test_2x8_not_colocated_gives_generation_a_node():
    """On a multi-node job non-colocated generation takes whole nodes (NeMo-RL's split): training on node 0's 8
    GPUs, 8 generation replicas on node 1; without resources.num_nodes the plan is refused naming the key."""
    p = plan(
        "default",
        "cluster.num_nodes=2",
        "policy.generation.colocated.enabled=false",
        "policy.generation.colocated.resources.num_nodes=1",
    )
    assert p.devices("policy rank") == [(0, f"cuda:{i}") for i in range(8)]
    assert p.devices("generation") == [(1, f"cuda:{i}") for i in range(8)]
    with pytest.raises(PlacementError, match=r"resources.num_nodes between 1 and 1"):
        plan("default", "cluster.num_nodes=2", "policy.generation.colocated.enabled=false")


def test_1x8_not_colocated_splits_the_node():
    """colocated.enabled=false with one generation GPU: 7 training ranks on cuda:0..6, generation alone on cuda:7;
    the batch checks count the 7 training ranks (default's global batch of 256 does not split over them)."""
    own_gpu = ["policy.generation.colocated.enabled=false", "policy.generation.colocated.resources.gpus_per_node=1"]
    with pytest.raises(ConfigError, match=r"256 must split evenly over the 7 data-parallel"):
        plan("default", *own_gpu)
    p = plan("default", *own_gpu, "grpo.num_prompts_per_step=28", "policy.train_global_batch_size=224")
    assert p.train_ranks == 7 and not p.colocated
    assert p.devices("generation") == [(0, "cuda:7")]
    assert roles_at(p, 0, "cuda:7") == [s.role for s in p.slots if s.role.startswith("generation")]
    with pytest.raises(PlacementError, match=r"must leave training at least one"):
        plan(
            "default",
            "policy.generation.colocated.enabled=false",
            "policy.generation.colocated.resources.gpus_per_node=8",
        )
    with pytest.raises(PlacementError, match=r"set policy.generation.colocated.resources.gpus_per_node"):
        plan("default", "policy.generation.colocated.enabled=false")


def test_megatron_on_8_gpus_is_refused():
    """The megatron-core policy trains in one process: 8 GPUs would leave 7 unused; the message names cluster.*."""
    with pytest.raises(PlacementError, match=r"megatron_cfg.enabled.*7 would stay unused.*cluster.gpus_per_node=1"):
        plan("default", "policy.megatron_cfg.enabled=true", "policy.dtensor_cfg.enabled=false")
    p = plan(
        "default", "policy.megatron_cfg.enabled=true", "policy.dtensor_cfg.enabled=false", "cluster.gpus_per_node=1"
    )
    assert p.train_ranks == 1 and not p.uses_ray


def test_cpu_only_profiles():
    """-c tiny (CPU, one process): the policy, its sampler and the rewards in one place, no Ray; 2 workers: Ray,
    two sharded ranks and two generation replicas."""
    p = plan("tiny")
    assert (p.gpus_per_node, p.train_ranks, p.uses_ray) == (0, 1, False)
    assert any("samples with the policy model" in s.role for s in p.slots)
    two = plan("tiny", "cluster.num_workers=2")
    assert two.devices("policy rank") == [(0, "cpu"), (0, "cpu")] and two.uses_ray
    assert [s.role for s in two.slots if s.role.startswith("generation")] == [
        "generation replica 0 (hf)",
        "generation replica 1 (hf)",
    ]
    with pytest.raises(PlacementError, match=r"cluster.gpus_per_node=0 \(a CPU run\)"):
        plan("tiny", "policy.generation.colocated.enabled=false")


@pytest.mark.slow  # two CLI dry runs (Snakemake plans the DAG): about 30 s on a busy 2-core machine
def test_dry_run_prints_the_plan_and_refuses_in_one_line(tmp_path):
    """-d prints the placement after the memory estimate; a refused plan is one 'error:' line naming the key, exit
    1, no traceback, nothing written."""
    command = [sys.executable, "-m", "rlvr.cli.main", "steps", "run", "rl/nemo_rl/rlvr", "-c", "tiny", "-d"]

    def run(*overrides: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*command, *overrides], cwd=tmp_path, env=nemotron_env(), capture_output=True, text=True, timeout=120
        )

    proc = run("policy.generation.colocated.enabled=false")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "error: policy.generation.colocated.enabled=false gives generation GPUs" in proc.stderr
    assert not (tmp_path / "results").exists()
    proc = run("cluster.num_workers=2")
    assert proc.returncode == 0, proc.stderr
    assert (
        "node 0 cpu     policy rank 0, policy rank 1, generation replica 0 (hf), generation replica 1 (hf)"
        in proc.stdout
    )
