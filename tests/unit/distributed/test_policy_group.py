"""The data-parallel math without Ray: row sharding, metric folding, and HFPolicy's all-reduce hook with threads
standing in for ranks (each thread holds one replica; a barrier-based SUM plays the collective)."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from dp_helpers import LOSS_CFG, POLICY_CFG, build_model, make_batch, with_logprobs
from torch.testing import assert_close

from rlvr.distributed.policy_group import shard_rows
from rlvr.grpo.loss import ClippedPGLoss
from rlvr.policy.hf import HFPolicy, sum_gradients
from rlvr.policy.train_metrics import Fold, fold


class ThreadSum:
    """In-place SUM across ``n`` threads: each deposits a copy, all wait, all add the copies in rank order."""

    def __init__(self, n: int):
        self.barrier = threading.Barrier(n, timeout=60)
        self.slots: list[torch.Tensor | None] = [None] * n

    def for_rank(self, rank: int):
        def all_reduce(tensor: torch.Tensor) -> None:
            self.slots[rank] = tensor.detach().clone()
            self.barrier.wait()
            total = self.slots[0].clone()
            for other in self.slots[1:]:
                total += other
            self.barrier.wait()  # nobody overwrites a slot before every rank has read it
            tensor.copy_(total)

        return all_reduce


def run_ranks(fn, n: int) -> list:
    """``fn(rank)`` in ``n`` threads; returns the results in rank order, re-raising the first error."""
    results, errors = [None] * n, []

    def target(rank: int) -> None:
        try:
            results[rank] = fn(rank)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=target, args=(r,)) for r in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


def test_shard_rows_takes_each_ranks_slice_of_every_global_batch():
    """B=8, G=4, W=2: rank 0 gets rows [0,1,4,5], rank 1 [2,3,6,7]; 0-d tensors and scalars pass through."""
    batch = {
        "input_ids": torch.arange(8)[:, None].expand(8, 3),
        "sample_mask": torch.arange(8.0),
        "beta": torch.tensor(0.5),
        "name": "x",
    }
    rank0, rank1 = (shard_rows(batch, 4, 2, r) for r in (0, 1))
    assert rank0["input_ids"][:, 0].tolist() == [0, 1, 4, 5]
    assert rank1["sample_mask"].tolist() == [2.0, 3.0, 6.0, 7.0]
    assert rank0["beta"] is batch["beta"] and rank1["name"] == "x"


def test_rank_fold_sums_additive_keys_and_keeps_replicated_ones():
    """loss sums, *_min/*_max take min/max, grad_norm/lr/global counts come from rank 0 unchanged."""
    per_rank = [
        {"loss": 0.25, "ratio_min": 0.9, "ratio_max": 1.1, "grad_norm": 3.0, "lr": 0.1, "global_valid_toks": 40.0},
        {"loss": -0.5, "ratio_min": 0.8, "ratio_max": 1.0, "grad_norm": 3.0, "lr": 0.1, "global_valid_toks": 40.0},
    ]
    assert fold(per_rank, Fold.RANKS) == {
        "loss": -0.25,
        "ratio_min": 0.8,
        "ratio_max": 1.1,
        "grad_norm": 3.0,
        "lr": 0.1,
        "global_valid_toks": 40.0,
    }


def test_sum_gradients_sums_and_keeps_none_where_no_rank_has_a_gradient():
    """Two ranks: a·grad sums to (1+2)·g; a parameter with a gradient on rank 1 only is zero-filled on rank 0;
    one without gradient anywhere stays None (the optimizer skips it, as in one process)."""
    collective = ThreadSum(2)

    def rank_fn(rank: int):
        params = [torch.nn.Parameter(torch.ones(3)) for _ in range(3)]
        params[0].grad = torch.full((3,), float(rank + 1))
        if rank == 1:
            params[1].grad = torch.tensor([1.0, 2.0, 3.0])
        sum_gradients(params, collective.for_rank(rank), bucket_numel=2)  # 2: forces one bucket per tensor
        return [None if p.grad is None else p.grad.clone() for p in params]

    for grads in run_ranks(rank_fn, 2):
        assert_close(grads[0], torch.full((3,), 3.0))
        assert_close(grads[1], torch.tensor([1.0, 2.0, 3.0]))
        assert grads[2] is None


@pytest.mark.parametrize("micro_batch_size", [2, 3])
def test_two_thread_ranks_train_like_one_process(micro_batch_size):
    """B=12, G=6: one HFPolicy (micro-batch 6: the global batch in one pass) vs two replicas with the hook on
    3 rows each. Two train() calls give the same metrics and weights up to fp32 summation order (1e-5)."""
    base = build_model()
    batch = with_logprobs(make_batch(rows=12), HFPolicy.from_config(POLICY_CFG, model=copy.deepcopy(base)))
    loss_fn = ClippedPGLoss(LOSS_CFG)
    single = HFPolicy.from_config(POLICY_CFG, model=copy.deepcopy(base))
    expected = [single.train(batch, loss_fn, global_batch_size=6, micro_batch_size=6) for _ in range(2)]

    collective = ThreadSum(2)
    replicas = [
        HFPolicy.from_config(POLICY_CFG, model=copy.deepcopy(base), all_reduce=collective.for_rank(r)) for r in range(2)
    ]

    def train_rank(rank: int) -> list[dict[str, float]]:
        shard = shard_rows(batch, 6, 2, rank)
        return [
            replicas[rank].train(shard, loss_fn, global_batch_size=3, micro_batch_size=micro_batch_size)
            for _ in range(2)
        ]

    per_rank = run_ranks(train_rank, 2)
    for call in range(2):
        got = fold([per_rank[0][call], per_rank[1][call]], Fold.RANKS)
        assert got.keys() == expected[call].keys()
        for key, value in expected[call].items():
            assert_close(got[key], value, atol=1e-5, rtol=1e-5, msg=f"call {call}, metric {key}")
    assert expected[0]["grad_norm"] > POLICY_CFG["max_grad_norm"]  # the first call clipped
    for replica in replicas:
        for name, weight in single.model.state_dict().items():
            assert_close(replica.model.state_dict()[name], weight, atol=1e-5, rtol=1e-5, msg=name)
