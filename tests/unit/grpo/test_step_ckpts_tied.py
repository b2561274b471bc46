"""Step checkpoints of a tied-embedding policy, and checkpointing.model_save_format (rlvr.grpo.step_ckpts).

The policy is a user's tied, bf16 Qwen2-style folder (tests/tied_user_model.py) converted by hf_to_megatron and
loaded as the rlvr stage loads it (``load_hf_model_from_megatron`` in ``policy.precision`` float32, then
``HFPolicy``). Before the fix, ``StepCheckpoints.save`` died on it with safetensors' "Some tensors share memory".
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rlvr.convert.hf_megatron import hf_to_megatron, load_hf_model_from_megatron
from rlvr.errors import CheckpointError, ConfigError
from rlvr.grpo.step_ckpts import StepCheckpoints, load_weights, save_weights
from rlvr.policy.hf import HFPolicy
from tests.tied_user_model import save_tied_user_model
from tests.unit.schema_config import policy_config

EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"
POLICY_CFG = policy_config(
    precision="float32",
    optimizer={"name": "torch.optim.AdamW", "kwargs": {"lr": 1e-2}},
    scheduler=None,
    max_grad_norm=1.0,
    generation={"temperature": 1.0, "top_p": 1.0, "top_k": None},
)


@pytest.fixture(scope="module")
def sft_checkpoint(tmp_path_factory) -> Path:
    """The user's tied bf16 folder as the rlvr rule converts it (checkpoint_megatron, float32)."""
    tmp = tmp_path_factory.mktemp("tied")
    folder = save_tied_user_model(tmp / "user_model")
    return hf_to_megatron(str(folder), str(tmp / "sft_ckpt"), "float32")


def fresh_policy(checkpoint: Path) -> HFPolicy:
    return HFPolicy.from_config(POLICY_CFG, model=load_hf_model_from_megatron(checkpoint, "float32"))


def pg_loss(lp, data, global_valid_seqs, global_valid_toks):
    """-Σ A·lp·m / N_tok: enough to move every weight, the tied embedding through both of its uses."""
    mask = (data["token_mask"] * data["sample_mask"][:, None])[:, 1:]
    return -(data["advantages"][:, 1:] * lp[:, 1:] * mask).sum() / global_valid_toks, {}


def train_step(policy: HFPolicy, seed: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, policy.model.config.vocab_size, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    token_mask = mask.float()
    token_mask[:, :3] = 0
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "token_mask": token_mask,
        "sample_mask": torch.ones(4),
        "advantages": torch.randn(4, 1, generator=g).expand(4, 9).clone(),
    }
    return policy.train(batch, pg_loss, global_batch_size=4, micro_batch_size=2)


def save_step(ckpts: StepCheckpoints, policy: HFPolicy, step: int) -> Path:
    full = policy.state_dict()
    return ckpts.save(
        step,
        model_state=full["model"],
        optimizer_state={k: v for k, v in full.items() if k != "model"},
        info={"consumed_prompts": 4 * step},
    )


@pytest.mark.parametrize("fmt,weights_file", [("safetensors", "model.safetensors"), ("torch_save", "model.pt")])
def test_tied_policy_saves_once_and_resumes_tied_and_exact(sft_checkpoint, tmp_path, fmt, weights_file):
    """A trained tied policy saves (one stored embedding), and a fresh policy resumed from the step is still tied,
    equals the trained weights, and trains on exactly like the uninterrupted policy."""
    original = fresh_policy(sft_checkpoint)
    assert original.model.lm_head.weight is original.model.model.embed_tokens.weight
    initial = original.model.model.embed_tokens.weight.detach().clone()
    train_step(original, seed=1)
    ckpts = StepCheckpoints(tmp_path / "ckpts", fingerprint="fp", metric_name=None, model_save_format=fmt)
    path = save_step(ckpts, original, 1)
    assert sorted(p.name for p in (path / "policy").iterdir()) == sorted([weights_file, "optimizer.pt"])
    if fmt == "safetensors":
        with safe_open(str(path / "policy" / weights_file), "pt") as fh:
            assert {EMBED} <= set(fh.keys()) and HEAD not in set(fh.keys())
            assert json.loads(fh.metadata()["rlvr_aliases"]) == {HEAD: EMBED}

    point = StepCheckpoints(tmp_path / "ckpts", fingerprint="fp", metric_name=None).find_resume_point(log=print)
    model_state, optimizer_state = StepCheckpoints.load(point)
    assert model_state[HEAD] is model_state[EMBED] or model_state[HEAD].data_ptr() == model_state[EMBED].data_ptr()
    resumed = fresh_policy(sft_checkpoint)
    resumed.load_state_dict({"model": model_state, **optimizer_state})
    assert resumed.model.lm_head.weight is resumed.model.model.embed_tokens.weight
    moved = (resumed.model.model.embed_tokens.weight - initial).abs().max()
    assert moved > 1e-3, "training did not move the embedding: the comparisons below would be vacuous"
    for (name, p), q in zip(original.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name
    assert train_step(original, seed=2) == train_step(resumed, seed=2)
    for (name, p), q in zip(original.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name


def test_resume_reads_either_format_whatever_the_setting_now(tmp_path):
    """model_save_format may change between the interrupted run and its resumption (it is not fingerprinted):
    step_1 saved as torch_save and step_2 as safetensors both load, ties included."""
    emb = torch.randn(5, 3)
    emb2 = emb * 2  # one tensor under two names, as a tied model's state_dict has it
    state = {"embed": emb, "head": emb, "norm": torch.ones(3)}
    StepCheckpoints(tmp_path, fingerprint="fp", metric_name=None, model_save_format="torch_save").save(
        1, model_state=state, optimizer_state=None, info={"consumed_prompts": 1}
    )
    StepCheckpoints(tmp_path, fingerprint="fp", metric_name=None, model_save_format="safetensors").save(
        2,
        model_state={"embed": emb2, "head": emb2, "norm": torch.ones(3) * 2},
        optimizer_state=None,
        info={"consumed_prompts": 2},
    )
    for step, scale in ((1, 1), (2, 2)):
        loaded = load_weights(tmp_path / f"step_{step}" / "policy")
        assert loaded.keys() == state.keys()
        assert torch.equal(loaded["embed"], emb * scale) and torch.equal(loaded["norm"], torch.ones(3) * scale)
        assert loaded["head"].data_ptr() == loaded["embed"].data_ptr()
    point = StepCheckpoints(
        tmp_path, fingerprint="fp", metric_name=None, model_save_format="torch_save"
    ).find_resume_point(log=lambda _: None)
    assert point.step == 2 and torch.equal(StepCheckpoints.load(point)[0]["head"], emb * 2)


def test_other_views_of_shared_memory_are_stored_as_copies(tmp_path):
    """Only an identical view becomes an alias; a slice of another tensor's memory is stored as its own copy."""
    weight = torch.arange(12.0).reshape(3, 4)
    save_weights({"w": weight, "row": weight[1], "t": weight.t()}, tmp_path / "model.safetensors")
    loaded = load_weights(tmp_path)
    assert torch.equal(loaded["w"], weight) and torch.equal(loaded["row"], weight[1])
    assert torch.equal(loaded["t"], weight.t())
    assert loaded["row"].data_ptr() != loaded["w"].data_ptr()


def test_bad_format_and_broken_files_are_clear_errors(tmp_path):
    """An unknown model_save_format is a ConfigError naming the key; a step without weights, an unreadable file
    or an alias to a tensor the file lacks are CheckpointErrors naming the file."""
    with pytest.raises(ConfigError, match="checkpointing.model_save_format: 'pickle' is not one of safetensors"):
        StepCheckpoints(tmp_path, fingerprint="fp", metric_name=None, model_save_format="pickle")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="empty: no model weights .*delete it"):
        load_weights(tmp_path / "empty")
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "model.safetensors").write_bytes(b"\x10\x00\x00")
    with pytest.raises(CheckpointError, match="model.safetensors: cannot read the step weights"):
        load_weights(tmp_path / "cut")
    (tmp_path / "alias").mkdir()
    save_file(
        {"a": torch.zeros(2)},
        str(tmp_path / "alias" / "model.safetensors"),
        metadata={"rlvr_aliases": json.dumps({"b": "c"})},
    )
    with pytest.raises(CheckpointError, match="tied weight b refers to c, which the file does not hold"):
        load_weights(tmp_path / "alias")
