"""FSDP2-sharded training (2 and 4 CPU ranks, gloo) against one unsharded in-process HFPolicy.

Four spawned processes run two sharded trainings: all four ranks (with activation checkpointing), then ranks
0-1 alone (a 2-rank mesh over a subgroup), each on the same rollout as the single process, cut as RayPolicyGroup
cuts it (rank ``r`` gets rows ``[k·G + r·G/W, k·G + (r+1)·G/W)`` of global batch ``k``). The sharded gradient is
a reduce-scatter SUM of the ranks' micro-batch gradients, so the weights agree with one process up to float
summation order (measured 6e-8; tolerance 1e-6). Per-rank bytes are read from the local shards
(``DTensor.to_local``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from dp_helpers import LOSS_CFG, POLICY_CFG, build_model, make_batch, with_logprobs
from torch.testing import assert_close

from rlvr.grpo.loss import ClippedPGLoss
from rlvr.policy.hf import HFPolicy

pytestmark = pytest.mark.slow
TOL = dict(atol=1e-6, rtol=1e-6)
ROWS, GLOBAL_BATCH, LOGPROB_ROWS = 16, 8, 7  # two optimizer steps per train() call; 7 rows split unevenly


def rollout() -> dict[str, torch.Tensor]:
    """The same GRPO-like rollout in every process (log-probs from the untrained model)."""
    return with_logprobs(make_batch(ROWS), HFPolicy.from_config(POLICY_CFG, model=build_model()))


def rank_rows(batch: dict[str, torch.Tensor], rank: int, world: int) -> dict[str, torch.Tensor]:
    local = GLOBAL_BATCH // world
    idx = torch.cat([torch.arange(k + rank * local, k + (rank + 1) * local) for k in range(0, ROWS, GLOBAL_BATCH)])
    return {key: value[idx] for key, value in batch.items()}


def local_bytes(policy) -> int:
    """Bytes of this rank's parameter and optimizer-state shards."""
    from torch.distributed.tensor import DTensor

    def size(t: torch.Tensor) -> int:
        t = t.to_local() if isinstance(t, DTensor) else t
        return t.numel() * t.element_size()

    params = list(policy.model.parameters())
    state = [v for s in policy.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return sum(size(p) for p in params) + sum(size(v) for v in state if v.dim() > 0)


def train_sharded(rank: int, world: int, group, out: Path) -> None:
    from torch.distributed.device_mesh import DeviceMesh

    from rlvr.policy.fsdp import ShardedHFPolicy

    mesh = DeviceMesh.from_group(group, "cpu", mesh_dim_names=("dp",))
    # 4 ranks also recompute each sharded layer in backward: the same gradients are expected.
    cfg = {**POLICY_CFG, "dtensor_cfg": {**POLICY_CFG["dtensor_cfg"], "activation_checkpointing": world == 4}}
    policy = ShardedHFPolicy.from_config(cfg, model=build_model(), mesh=mesh)
    batch = rollout()
    rows = torch.arange(LOGPROB_ROWS).tensor_split(world)[rank]
    logprobs = policy.get_logprobs(batch["input_ids"][rows], batch["attention_mask"][rows], micro_batch_size=2)
    losses, offloaded = [], 0
    for step in range(2):
        if step == 1 and world == 2:
            # As around a colocated generation (forced: on a CPU the policy would skip it): the sharded AdamW
            # state leaves for fresh host storage and train() brings it back; the step must not change.
            offloaded = policy.optimizer_offload.offload()
        metrics = policy.train(
            rank_rows(batch, rank, world),
            ClippedPGLoss(LOSS_CFG),
            global_batch_size=GLOBAL_BATCH // world,
            micro_batch_size=1,
        )
        loss = torch.tensor(metrics["loss"], dtype=torch.float64)
        dist.all_reduce(loss, group=group)  # each rank's loss is its share of the global-batch loss
        losses.append(loss.item())
        grad_norm = metrics["grad_norm"]
    state = policy.state_dict()  # a collective: every rank gathers
    resumed = ShardedHFPolicy.from_config(POLICY_CFG, model=build_model(seed=1), mesh=mesh)
    resumed.load_state_dict(state)
    again = resumed.state_dict()
    result = {
        "losses": losses,
        "grad_norm": grad_norm,
        "bytes": local_bytes(policy),
        "offloaded": offloaded,
        "logprobs": logprobs,
        "resumed": again if rank == 0 else None,
    }
    if rank == 0:
        result["state"] = state
    torch.save(result, out / f"w{world}_rank{rank}.pt")


def worker(rank: int, init_file: str, out: Path) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=4)
    train_sharded(rank, 4, dist.group.WORLD, out)
    pair = dist.new_group([0, 1])  # every rank takes part in creating it
    if rank < 2:
        train_sharded(rank, 2, pair, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.start_processes(worker, args=(str(out / "init"), out), nprocs=4, start_method="spawn")
    return {world: [torch.load(out / f"w{world}_rank{r}.pt") for r in range(world)] for world in (2, 4)}


@pytest.fixture(scope="module")
def single():
    """The 1-rank run: two train() calls of an unsharded HFPolicy; its log-probs before training."""
    policy = HFPolicy.from_config(POLICY_CFG, model=build_model())
    batch = rollout()
    logprobs = policy.get_logprobs(
        batch["input_ids"][:LOGPROB_ROWS], batch["attention_mask"][:LOGPROB_ROWS], micro_batch_size=2
    )
    runs = [
        policy.train(batch, ClippedPGLoss(LOSS_CFG), global_batch_size=GLOBAL_BATCH, micro_batch_size=2)
        for _ in range(2)
    ]
    return {
        "losses": [m["loss"] for m in runs],
        "grad_norm": runs[-1]["grad_norm"],
        "state": policy.state_dict(),
        "logprobs": logprobs,
    }


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_training_matches_one_process(sharded, single, world):
    """Losses, grad norm, updated weights and AdamW moments after two train() calls equal the 1-rank run's."""
    ranks = sharded[world]
    for rank in ranks:
        assert_close(
            torch.tensor(rank["losses"]),
            torch.tensor(single["losses"], dtype=torch.float64).float(),
            check_dtype=False,
            **TOL,
        )
        assert rank["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-5)  # norm of shards: another order
    got, want = ranks[0]["state"], single["state"]
    assert got["model"].keys() == want["model"].keys()
    for name, tensor in want["model"].items():
        assert_close(got["model"][name], tensor, **TOL)
    assert got["optimizer"]["state"].keys() == want["optimizer"]["state"].keys()
    for index, entry in want["optimizer"]["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            assert_close(got["optimizer"]["state"][index][key], entry[key], atol=1e-7, rtol=1e-5)
    assert got["scheduler"] == want["scheduler"]


@pytest.mark.parametrize("world", [2, 4])
def test_sharded_logprobs_match_one_process(sharded, single, world):
    """7 rows split over the ranks (uneven, so some ranks run padding forwards) give the single policy's log-probs."""
    assert_close(torch.cat([rank["logprobs"] for rank in sharded[world]]), single["logprobs"], **TOL)


def test_per_rank_memory_is_a_shard(sharded):
    """Each rank holds about 1/W of the parameter + AdamW bytes (dim-0 shards of uneven tensors round up)."""
    full = sharded[2][0]["bytes"] + sharded[2][1]["bytes"]
    for world in (2, 4):
        per_rank = [rank["bytes"] for rank in sharded[world]]
        assert sum(per_rank) == full  # shards partition the state: nothing replicated
        assert max(per_rank) <= full / world * 1.1
        print(f"world {world}: per-rank parameter+optimizer bytes {per_rank} of {full}")


def test_the_sharded_optimizer_state_is_handed_back_and_the_step_unchanged(sharded):
    """On 2 ranks the AdamW shards were offloaded between the two train() calls (rlvr.policy.offload): together
    the ranks moved the two fp32 moments of every parameter exactly once (the shards partition them) plus each
    rank's fp32 step counters, and the step after it still matches one process
    (test_sharded_training_matches_one_process[2])."""
    tensors = list(build_model().parameters())
    moments = 2 * 4 * sum(p.numel() for p in tensors)
    assert sum(rank["offloaded"] for rank in sharded[2]) == moments + 2 * 4 * len(tensors)


def test_sharded_state_resumes(sharded, single):
    """The gathered checkpoint is the single-process format: an unsharded HFPolicy loads it as is, and a fresh
    sharded policy restored from it gathers the same weights and optimizer state again."""
    state, resumed = sharded[2][0]["state"], sharded[2][0]["resumed"]
    for name, tensor in state["model"].items():
        assert_close(resumed["model"][name], tensor, atol=0, rtol=0)
    for index, entry in state["optimizer"]["state"].items():
        for key, value in entry.items():
            assert_close(resumed["optimizer"]["state"][index][key], value, atol=0, rtol=0)
    policy = HFPolicy.from_config(POLICY_CFG, model=build_model(seed=1))
    policy.load_state_dict(sharded[2][0]["state"])
    for name, tensor in single["state"]["model"].items():
        assert_close(policy.model.state_dict()[name], tensor, **TOL)
