"""The trainer places its Ray roles as the placement plan says (not only the printed plan): colocated
generation replicas share the training ranks' device bundles; with ``policy.generation.colocated.enabled=false``
they take GPUs of their own, as many as ``colocated.resources`` gives, and training keeps the rest.

The Ray classes are replaced by recorders of what the trainer asks for (no Ray cluster, no GPUs needed).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import rlvr.distributed.actors as actors
import rlvr.distributed.policy_group as policy_group
from rlvr.config import load_step_config
from rlvr.grpo.roles import _ray_roles
from rlvr.launch.placement import plan_placement
from rlvr.steps.index import resolve_step

STEP = resolve_step("rl/nemo_rl/rlvr")
DATA = ["data.train.data_path=/data/train.jsonl", "data.validation.data_path=/data/val.jsonl"]


class GroupRecorder:
    def __init__(self, policy_cfg, source, *, num_workers, trainable=True, devices=None):
        self.num_workers, self.trainable = num_workers, trainable
        self.devices = devices if devices is not None else f"bundles x{num_workers}"


class ReplicaRecorder:
    def __init__(self, source, tokenizer, *, num_cpus, device_slot, **options):
        self.device_slot, self.options = device_slot, options


@pytest.fixture
def recorded(monkeypatch):
    monkeypatch.setattr(policy_group, "RayPolicyGroup", GroupRecorder)
    monkeypatch.setattr(actors, "RayGenerationWorker", ReplicaRecorder)

    def build(*overrides: str):
        cfg = load_step_config(STEP, "default", [*DATA, "policy.generation.backend=vllm", *overrides]).engine_view()
        plan = plan_placement(cfg)
        gen_kwargs = {"batch_size": 1, "max_total_length": 8}
        return _ray_roles(cfg, plan, Path("policy"), Path("tok"), gen_kwargs)

    return build


def test_colocated_replicas_share_the_training_bundles_and_their_engines_sleep(recorded):
    policy, generator, _ = recorded()
    assert policy.num_workers == 8 and len(generator.workers) == 8
    assert [w.device_slot for w in generator.workers] == [("bundles x8", i) for i in range(8)]
    assert all(w.options["sleep_mode"] for w in generator.workers)


def test_not_colocated_gives_generation_gpus_of_its_own(recorded):
    policy, generator, _ = recorded(
        "policy.generation.colocated.enabled=false", "policy.generation.colocated.resources.gpus_per_node=4"
    )
    assert policy.num_workers == 4 and len(generator.workers) == 4
    assert all(w.device_slot is None for w in generator.workers)  # a GPU each, outside the training bundles
    assert not any(w.options["sleep_mode"] for w in generator.workers)  # nothing to hand back to
