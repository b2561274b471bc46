"""PolicyWorkers.build picks each in-process policy backend and drives it only through the Policy protocol.

A tiny random Llama written as a ``checkpoint_megatron`` (with its tokenizer), real transformers / peft /
megatron-core policies, the HF generation backend: build, generate, train one step, refit, save the artifact.
"""

from __future__ import annotations

import pytest
import torch

from rlvr.config.loader import complete_config
from rlvr.convert.hf_megatron import save_hf_model_as_megatron
from rlvr.generation import GenerationConfig
from rlvr.grpo.loss import ClippedPGLoss
from rlvr.grpo.roles import PolicyWorkers
from rlvr.policy.hf import HFPolicy
from rlvr.policy.megatron import MegatronPolicy


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer, make_model):
    root = tmp_path_factory.mktemp("roles")
    tokenizer.save_pretrained(root / "tok")
    save_hf_model_as_megatron(make_model(seed=0), root / "tok", root / "policy", 0)
    return root


def _cfg(checkpoint, *, kl: float = 0.0, megatron: bool = False, lora: bool = False) -> dict:
    policy = {
        "precision": "float32",
        "tokenizer": {"name": str(checkpoint / "tok")},
        "optimizer": {"name": "torch.optim.SGD", "kwargs": {"lr": 0.5}},
        "scheduler": None,
        "generation": {"backend": "hf", "max_new_tokens": 4, "temperature": 1.0},
        "dtensor_cfg": {"enabled": not megatron, "lora_cfg": {"enabled": lora, "dim": 2}},
        "megatron_cfg": {"enabled": megatron},
    }
    return complete_config(
        {
            "policy": policy,
            "loss_fn": {"reference_policy_kl_penalty": kl},
            "cluster": {"num_nodes": 1, "gpus_per_node": 0, "num_workers": 1},
            "grpo": {"max_num_steps": 2, "seed": 0},
        }
    )


def _train_batch(workers: PolicyWorkers, outputs) -> dict[str, torch.Tensor]:
    rows = [[5, 6, *o.token_ids] for o in outputs]
    width = max(map(len, rows))
    ids = torch.tensor([r + [workers.pad_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    token_mask = mask.clone()
    token_mask[:, :2] = 0
    batch = {"input_ids": ids, "attention_mask": mask, "token_mask": token_mask, "sample_mask": torch.ones(len(rows))}
    batch["prev_logprobs"] = workers.logprobs(batch)
    batch["generation_logprobs"] = batch["prev_logprobs"]
    batch["reference_policy_logprobs"] = (
        workers.reference_logprobs(batch) if workers.has_reference else torch.zeros_like(batch["prev_logprobs"])
    )
    batch["advantages"] = torch.tensor([[1.0], [-1.0]]).expand(ids.shape).contiguous()
    return batch


@pytest.mark.parametrize(
    ("options", "backend", "shares"),
    [
        ({}, HFPolicy, True),
        ({"kl": 0.1}, HFPolicy, True),
        ({"lora": True}, HFPolicy, False),
        ({"megatron": True}, MegatronPolicy, False),
    ],
    ids=["hf", "hf+reference", "lora", "megatron"],
)
def test_build_generate_train_refit_and_save(checkpoint, tmp_path, options, backend, shares):
    """Each backend builds, samples, trains one step, refits its generator when it does not share the model, and
    saves an artifact; a reference exists exactly when the KL weight is positive."""
    workers = PolicyWorkers.build(_cfg(checkpoint, **options), checkpoint / "policy")
    try:
        assert isinstance(workers.policy, backend) and workers.shares_model is shares
        assert workers.has_reference is (options.get("kl", 0.0) > 0)
        sampling = GenerationConfig(max_new_tokens=4, temperature=1.0)
        outputs = workers.generate([[5, 6], [5, 6]], sampling, seed=0)
        metrics = workers.train(_train_batch(workers, outputs), ClippedPGLoss(), 2, 1)
        assert metrics["num_optimizer_steps"] == 1.0 and metrics["grad_norm"] > 0
        workers.generate([[5, 6]], sampling, seed=1)  # refits first unless the model is shared
        if not shares:
            refit = workers.generator.model.state_dict()
            for name, weight in workers.policy.hf_state_dict().items():
                assert torch.equal(refit[name], weight), name
        adapter = tmp_path / "adapter"
        workers.save_artifact(tmp_path / "artifact", iteration=1, extra={}, adapter_dir=adapter, base_model="base")
        assert (tmp_path / "artifact").is_dir() and adapter.is_dir() is bool(options.get("lora"))
    finally:
        workers.close()
