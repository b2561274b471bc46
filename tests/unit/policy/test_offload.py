"""The memory a colocated training phase hands back while generation runs (rlvr.policy.offload).

On a CPU the policy never hands back (the state already lives in host memory), so these tests switch it on
explicitly: the moves are then CPU-to-CPU copies into fresh storage, which exercises the same bookkeeping (the
optimizer must step the tensors that came back, not the ones that left). The GPU-marked tests measure what a
GPU run frees.
"""

from __future__ import annotations

import copy

import pytest
import torch

from rlvr.generation import GenerationConfig
from rlvr.generation.hf import HFGenerationBackend
from rlvr.policy.hf import HFPolicy
from rlvr.policy.offload import OptimizerOffload, offload_settings
from tests.unit.policy.test_hf_policy import make_batch, pg_loss
from tests.unit.schema_config import policy_config

ADAMW = {"name": "torch.optim.AdamW", "kwargs": {"lr": 0.01, "weight_decay": 0.01}}


def trained_policy(model: torch.nn.Module, **flags: bool) -> HFPolicy:
    """An AdamW policy over a copy of ``model`` after one training step (so the optimizer has state)."""
    policy = HFPolicy(copy.deepcopy(model), optimizer=ADAMW, **flags)
    policy.train(make_batch(seed=1), pg_loss, global_batch_size=8, micro_batch_size=3)
    return policy


def state_tensors(optimizer: torch.optim.Optimizer) -> list[tuple[str, torch.Tensor]]:
    return [(key, value) for entry in optimizer.state.values() for key, value in entry.items()]


def test_offload_copies_every_state_tensor_out_and_back_bit_exactly(model):
    """Offload: each state tensor is replaced by a copy in new storage (equal bits), the gradients are released,
    a second offload moves nothing; reload: equal bits again, each tensor on its original device."""
    policy = trained_policy(model)
    before = [(key, value.clone(), value.data_ptr(), value.device) for key, value in state_tensors(policy.optimizer)]
    assert {key for key, *_ in before} == {"step", "exp_avg", "exp_avg_sq"}
    assert any(p.grad is not None for p in policy.master.parameters())
    offload = OptimizerOffload(policy.optimizer)

    moved = offload.offload()
    assert moved == sum(v.numel() * v.element_size() for _, v, _, _ in before) > 0
    for (_, value), (_, old, pointer, _) in zip(state_tensors(policy.optimizer), before):
        assert value.data_ptr() != pointer and torch.equal(value, old)
    assert all(p.grad is None for p in policy.master.parameters())
    assert offload.offloaded and offload.offload() == 0

    offload.reload()
    assert not offload.offloaded
    for (_, value), (_, old, _, device) in zip(state_tensors(policy.optimizer), before):
        assert torch.equal(value, old) and value.device == device and value.dtype == old.dtype


@pytest.mark.parametrize("precision", [torch.float32, torch.bfloat16])
def test_a_step_after_the_hand_back_equals_a_step_without(model, precision):
    """Paired runs from the same weights: one hands its optimizer state back around a generation and a log-prob
    pass (as a colocated GRPO step does), the other never does; after the next step their weights, fp32 masters
    and optimizer state are identical, bit for bit (bf16 too: the masters and AdamW state are fp32)."""
    base = copy.deepcopy(model).to(precision)
    plain = trained_policy(base)
    handing = trained_policy(base, offload_for_generation=True, offload_for_logprob=True)
    tokenizer_ids = [[5, 6, 7], [8, 9]]
    handing.offload_before_refit()
    assert handing.optimizer_offload.offloaded
    sampler = HFGenerationBackend(handing.model, _Detok(), max_total_length=16)
    sampler.prepare_for_generation()
    sampler.generate(tokenizer_ids, GenerationConfig(max_new_tokens=4), seed=0)
    sampler.finish_generation()
    batch = make_batch(seed=2)
    handing.prepare_for_lp_inference()
    lp_handing = handing.get_logprobs(batch["input_ids"], batch["attention_mask"], micro_batch_size=4)
    lp_plain = plain.get_logprobs(batch["input_ids"], batch["attention_mask"], micro_batch_size=4)
    assert torch.equal(lp_handing, lp_plain)

    metrics = [p.train(batch, pg_loss, global_batch_size=4, micro_batch_size=3) for p in (plain, handing)]
    assert not handing.optimizer_offload.offloaded  # train brought it back before the first optimizer step
    assert metrics[0] == metrics[1]
    for (name, a), (_, b) in zip(plain.model.state_dict().items(), handing.model.state_dict().items()):
        assert torch.equal(a, b), name
    for a, b in zip(plain.master.parameters(), handing.master.parameters()):
        assert torch.equal(a, b)
    for (key, a), (_, b) in zip(state_tensors(plain.optimizer), state_tensors(handing.optimizer)):
        assert torch.equal(a, b), key


def test_a_checkpoint_load_while_offloaded_leaves_nothing_to_bring_back(model):
    """Loading a state replaces the optimizer's entries: the pending reload is done first, so a later offload
    moves the loaded state (not nothing) and the step after it matches a policy that never offloaded."""
    plain = trained_policy(model)
    handing = trained_policy(model, offload_for_generation=True)
    saved = plain.state_dict()
    handing.offload_before_refit()
    handing.load_state_dict(copy.deepcopy(saved))
    assert not handing.optimizer_offload.offloaded
    handing.offload_before_refit()
    assert handing.optimizer_offload.offloaded
    batch = make_batch(seed=3)
    assert plain.train(batch, pg_loss, global_batch_size=8, micro_batch_size=8) == handing.train(
        batch, pg_loss, global_batch_size=8, micro_batch_size=8
    )
    for a, b in zip(plain.model.parameters(), handing.model.parameters()):
        assert torch.equal(a, b)


def test_the_policy_hands_back_only_on_a_gpu_and_as_the_keys_say():
    """Colocated generation (the default) hands back on a GPU; offload_optimizer_for_logprob adds the log-prob
    pass; on a CPU neither (nothing to free); a frozen policy has no optimizer state to move."""
    cfg = policy_config()
    assert offload_settings(cfg, torch.device("cpu")) == {"offload_for_generation": False, "offload_for_logprob": False}
    assert offload_settings(cfg, torch.device("cuda")) == {"offload_for_generation": True, "offload_for_logprob": False}
    apart = policy_config(generation={"colocated": {"enabled": False}}, offload_optimizer_for_logprob=True)
    assert offload_settings(apart, torch.device("cuda")) == {
        "offload_for_generation": False,
        "offload_for_logprob": True,
    }
    frozen = HFPolicy(torch.nn.Linear(2, 2).requires_grad_(False), offload_for_generation=True)
    assert frozen.optimizer_offload is None
    frozen.offload_before_refit()  # nothing to do, no error


class _Detok:
    """The two tokenizer attributes and the decode the HF sampler needs."""

    eos_token_id, pad_token_id = 1, 0

    def decode(self, token_ids, skip_special_tokens=True):
        return " ".join(map(str, token_ids))


@pytest.mark.gpu
def test_on_a_gpu_the_optimizer_state_leaves_the_device_during_generation(model):
    """Measured with torch.cuda.memory_allocated: handing back frees at least AdamW's two fp32 moments (and the
    gradients); the generation between runs with that memory free; training brings it back and steps as the
    same policy on the same GPU with generation not colocated (no hand-back), within CUDA's non-deterministic
    backward sums."""
    base = copy.deepcopy(model).to("cuda")
    keys = dict(precision="float32", optimizer=ADAMW, scheduler=None)
    handing = HFPolicy.from_config(policy_config(**keys), model=copy.deepcopy(base))
    apart = policy_config(**keys, generation={"colocated": {"enabled": False}})
    plain = HFPolicy.from_config(apart, model=copy.deepcopy(base))
    assert handing.offload_for_generation and not handing.offload_for_logprob
    assert not plain.offload_for_generation
    for policy in (plain, handing):
        policy.train(make_batch(seed=1), pg_loss, global_batch_size=8, micro_batch_size=3)
    moments = 2 * sum(p.numel() * 4 for p in handing.master.parameters())
    torch.cuda.synchronize()
    training = torch.cuda.memory_allocated()
    handing.offload_before_refit()
    plain.offload_before_refit()  # not colocated: keeps everything
    during = torch.cuda.memory_allocated()
    assert training - during >= moments, (training, during, moments)
    assert all(not v.is_cuda for _, v in state_tensors(handing.optimizer))
    sampler = HFGenerationBackend(handing.model, _Detok(), max_total_length=32)
    sampler.generate([[5, 6, 7]] * 8, GenerationConfig(max_new_tokens=8), seed=0)
    sampler.finish_generation()
    batch = make_batch(seed=2)
    for policy in (plain, handing):
        policy.train(batch, pg_loss, global_batch_size=8, micro_batch_size=4)
    devices = [[v.device for _, v in state_tensors(p.optimizer)] for p in (plain, handing)]
    assert devices[0] == devices[1]  # everything back where it was
    for a, b in zip(plain.model.parameters(), handing.model.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
