"""PolicyWorkers hands device memory back and forth between the phases of a colocated GRPO step.

The order matters: the training state leaves before the engine takes its memory back (so the two never hold it
at once), the refit reaches an awake engine, and the engine hands its memory back however generation ends.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rlvr.generation import GenerationConfig
from rlvr.grpo.roles import PolicyWorkers
from tests.unit.grpo.fakes import FakeGenerator, FakePolicy


class PhasePolicy(FakePolicy):
    """FakePolicy that logs its hand-back calls into a shared list."""

    def __init__(self, log: list[str]):
        super().__init__()
        self.log = log

    def offload_before_refit(self) -> None:
        self.log.append("policy.offload_before_refit")

    def prepare_for_lp_inference(self) -> None:
        self.log.append("policy.prepare_for_lp_inference")


class PhaseGenerator(FakeGenerator):
    def __init__(self, tokenizer, script, log: list[str], fail: bool = False):
        super().__init__(tokenizer, script)
        self.log, self.fail = log, fail

    def prepare_for_generation(self) -> None:
        self.log.append("generator.prepare_for_generation")

    def update_weights(self, state_dict) -> None:
        self.log.append("generator.update_weights")

    def generate(self, prompt_token_ids, cfg, *, seed):
        self.log.append("generator.generate")
        if self.fail:
            raise RuntimeError("engine died")
        return super().generate(prompt_token_ids, cfg, seed=seed)

    def finish_generation(self) -> None:
        self.log.append("generator.finish_generation")


def _workers(tokenizer, log: list[str], fail: bool = False) -> PolicyWorkers:
    generator = PhaseGenerator(tokenizer, {"1+1=": ["2"]}, log, fail)
    return PolicyWorkers(PhasePolicy(log), generator, tokenizer, Path("."), logprob_batch_size=4, shares_model=False)


def test_a_step_hands_memory_back_in_order(tokenizer):
    """Generation: training state out, engine awake, refit (after a train step), sample, engine asleep; the
    log-prob pass announces itself to the policy (policy.offload_optimizer_for_logprob)."""
    log: list[str] = []
    workers = _workers(tokenizer, log)
    ids = workers.encode(["1+1="])
    cfg = GenerationConfig(max_new_tokens=3)
    workers.generate(ids, cfg, seed=0)
    workers._stale = True  # as after workers.train
    workers.generate(ids, cfg, seed=0)
    batch = {"input_ids": torch.tensor(ids), "attention_mask": torch.ones(1, len(ids[0]), dtype=torch.long)}
    workers.logprobs(batch)
    once = ["policy.offload_before_refit", "generator.prepare_for_generation"]
    after = ["generator.generate", "generator.finish_generation"]
    assert log == once + after + once + ["generator.update_weights"] + after + ["policy.prepare_for_lp_inference"]


def test_the_engine_hands_memory_back_even_when_generation_fails(tokenizer):
    log: list[str] = []
    workers = _workers(tokenizer, log, fail=True)
    with pytest.raises(RuntimeError, match="engine died"):
        workers.generate(workers.encode(["1+1="]), GenerationConfig(max_new_tokens=3), seed=0)
    assert log[-1] == "generator.finish_generation"
