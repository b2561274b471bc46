"""MegatronPolicy: same weights and batch as HFPolicy give the same log-probs, loss, grad norm and update.

Independent references: HFPolicy over the real transformers model the checkpoint was written from, the real
``ClippedPGLoss``, and megatron-core's own ``OptimizerParamScheduler`` for the LR schedule.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

from rlvr.convert.hf_megatron import save_hf_model_as_megatron
from rlvr.errors import ConfigError
from rlvr.grpo.loss import ClippedPGLoss
from rlvr.policy.hf import HFPolicy
from rlvr.policy.megatron import MegatronLRSchedule, MegatronPolicy
from tests.unit.schema_config import policy_config

VOCAB = 40
GENERATION = {"temperature": 0.7, "top_k": 20, "top_p": 0.9}


def tiny_hf(family: str) -> torch.nn.Module:
    """Llama (untied, GQA 4/2) or Qwen2 (tied, QKV biases); every tensor redrawn so misplaced norms show."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    config_cls, model_cls, tied = {
        "llama": (LlamaConfig, LlamaForCausalLM, False),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM, True),
    }[family]
    config = config_cls(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=tied,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(1)
    model = model_cls(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.15)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, tuple[Path, torch.nn.Module]]:
    """``family -> (checkpoint_megatron root, the HF model it was written from)``."""
    out = {}
    for family in ("llama", "qwen2"):
        model = tiny_hf(family)
        root = tmp_path_factory.mktemp(f"ckpt_{family}")
        save_hf_model_as_megatron(model, None, root / "policy", 0)
        out[family] = (root / "policy", model)
    return out


def policy_cfg(optimizer: str = "SGD", lr: float = 1.0, **extra) -> dict:
    return policy_config(
        **{
            "precision": "float32",
            "optimizer": {"name": f"torch.optim.{optimizer}", "kwargs": {"lr": lr}},
            "scheduler": None,
            "max_grad_norm": 1.0,
            "generation": GENERATION,
            "megatron_cfg": {"enabled": True},
            **extra,
        }
    )


def both(checkpoints, family: str, cfg: dict) -> tuple[HFPolicy, MegatronPolicy]:
    """An HFPolicy over a fresh copy of the HF model and a MegatronPolicy from its checkpoint, same config."""
    root, model = checkpoints[family]
    hf = HFPolicy.from_config(cfg, model=copy.deepcopy(model))
    return hf, MegatronPolicy.from_config(cfg, policy_path=root, device="cpu")


def make_batch(hf: HFPolicy, seed: int = 0, left_pad: bool = False) -> dict[str, torch.Tensor]:
    """6 rows of 5..11 tokens (4 prompt tokens), row 4 masked out; the loss inputs of a real GRPO step.

    ``left_pad`` moves the same tokens (and per-token inputs) to the end of each row.
    """
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([11, 8, 6, 11, 9, 5])
    attention = (torch.arange(11) < lengths[:, None]).long()
    rows = {
        "input_ids": torch.randint(3, VOCAB, (6, 11), generator=g) * attention,
        "attention_mask": attention,
        "token_mask": attention.float() * (torch.arange(11) >= 4),
        "gen_noise": 0.02 * torch.randn(6, 11, generator=g) * attention,
        "ref_shift": 0.1 * torch.rand(6, 11, generator=g) * attention,
    }
    if left_pad:
        rows = {k: torch.stack([v[i].roll(11 - int(n)) for i, n in enumerate(lengths)]) for k, v in rows.items()}
    prev = hf.get_logprobs(rows["input_ids"], rows["attention_mask"], micro_batch_size=6)
    return {
        "input_ids": rows["input_ids"],
        "attention_mask": rows["attention_mask"],
        "token_mask": rows["token_mask"],
        "sample_mask": torch.tensor([1.0, 1, 1, 1, 0, 1]),
        "advantages": torch.randn(6, 1, generator=g).expand(6, 11).clone(),
        "prev_logprobs": prev,
        "generation_logprobs": prev + rows["gen_noise"],
        "reference_policy_logprobs": prev - rows["ref_shift"],
    }


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("padding", ["right", "left", "holes"])
def test_logprobs_equal_hf_policy(checkpoints, family, padding):
    """get_logprobs (filtered and temperature-only) equals HFPolicy's for right, left and gapped masks."""
    hf, mp = both(checkpoints, family, policy_cfg())
    batch = make_batch(hf, left_pad=padding == "left")
    mask = batch["attention_mask"].clone()
    if padding == "holes":
        mask[0, 5:7] = 0  # HF skips the gap through position_ids = cumsum - 1; packing must do the same
    for filtered in (True, False):
        expected = hf.get_logprobs(batch["input_ids"], mask, micro_batch_size=6, filtered=filtered)
        got = mp.get_logprobs(batch["input_ids"], mask, micro_batch_size=4, filtered=filtered)
        assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got[:, 0] == 0).all() and (got[mask == 0] == 0).all()
    assert (got[mask.bool() & (torch.arange(11) > 0)] != 0).any()


@pytest.mark.parametrize(
    ("family", "optimizer", "lr", "atol"),
    [
        ("llama", "SGD", 1.0, 1e-6),
        ("qwen2", "SGD", 1.0, 1e-6),
        ("llama", "AdamW", 1e-3, 1e-5),
        ("qwen2", "AdamW", 1e-3, 1e-5),
    ],
)
def test_one_train_call_equals_hf_policy(checkpoints, family, optimizer, lr, atol):
    """Same weights and batch -> same ClippedPGLoss metrics, grad norm and updated weights (two optimizer steps).

    AdamW's first step is about ``lr · sign(g)``, which magnifies rounding in near-zero gradients; its weights
    are compared to 1% of one step (``atol = 1e-5`` at ``lr = 1e-3``), while a wrong update is off by ``lr``.
    """
    hf, mp = both(checkpoints, family, policy_cfg(optimizer, lr, max_grad_norm=0.1))
    batch, loss_fn = make_batch(hf), ClippedPGLoss()
    before = {k: v.clone() for k, v in hf.model.state_dict().items()}
    expected = hf.train(batch, loss_fn, global_batch_size=3, micro_batch_size=2)
    got = mp.train(batch, loss_fn, global_batch_size=3, micro_batch_size=2)
    assert expected["num_optimizer_steps"] == got["num_optimizer_steps"] == 2
    assert expected["grad_norm"] > 0.1  # clipping is active
    assert got.keys() == expected.keys()
    assert_close(
        torch.tensor([got[k] for k in expected]), torch.tensor([expected[k] for k in expected]), atol=1e-6, rtol=1e-5
    )
    hf_after, mp_after = hf.model.state_dict(), mp.hf_state_dict()
    for name, weight in hf_after.items():
        assert_close(mp_after[name], weight, atol=atol, rtol=1e-5, msg=name)
    assert max((hf_after[k] - before[k]).abs().max() for k in before) > 100 * atol  # the step is not trivial
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert_close(
        mp.get_logprobs(ids, mask, micro_batch_size=6),
        hf.get_logprobs(ids, mask, micro_batch_size=6),
        atol=1e-5,
        rtol=1e-5,
    )


def test_update_does_not_depend_on_micro_batch_size_or_padding_side(checkpoints):
    """One row per micro-batch on right padding and six rows on left padding give the same step."""
    hf, mp_right = both(checkpoints, "qwen2", policy_cfg())
    mp_left = MegatronPolicy.from_config(policy_cfg(), policy_path=checkpoints["qwen2"][0], device="cpu")
    loss_fn = ClippedPGLoss()
    right, left = make_batch(hf), make_batch(hf, left_pad=True)
    m_right = mp_right.train(right, loss_fn, global_batch_size=6, micro_batch_size=1)
    m_left = mp_left.train(left, loss_fn, global_batch_size=6, micro_batch_size=6)
    assert_close(m_left["grad_norm"], m_right["grad_norm"], atol=1e-6, rtol=1e-5)
    assert_close(m_left["loss"], m_right["loss"], atol=1e-6, rtol=1e-5)
    a, b = mp_right.model_state(), mp_left.model_state()
    for name in a:
        assert_close(b[name], a[name], atol=1e-6, rtol=1e-5, msg=name)


def test_megatron_optimizer_and_scheduler_equal_the_torch_config_they_map_to(checkpoints):
    """megatron_cfg {adam, wd 0, clip_grad, linear warm-up} == policy AdamW + LinearLR + max_grad_norm, 2 steps."""
    megatron_cfg = {
        "enabled": True,
        "optimizer": {
            "optimizer": "adam",
            "lr": 1e-3,
            "min_lr": 0.0,
            "weight_decay": 0.0,
            "adam_beta1": 0.8,
            "adam_beta2": 0.95,
            "adam_eps": 1e-6,
            "clip_grad": 0.2,
        },
        "scheduler": {"lr_decay_style": "constant", "lr_warmup_iters": 2, "lr_warmup_init": 1e-4},
    }
    torch_cfg = {
        "precision": "float32",
        "optimizer": {
            "name": "torch.optim.AdamW",
            "kwargs": {"lr": 1e-3, "betas": [0.8, 0.95], "eps": 1e-6, "weight_decay": 0.0},
        },
        "scheduler": {
            "name": "torch.optim.lr_scheduler.LinearLR",
            "kwargs": {"start_factor": 0.1, "end_factor": 1.0, "total_iters": 2},
        },
        "max_grad_norm": 0.2,
        "generation": GENERATION,
    }
    root, model = checkpoints["llama"]
    hf = HFPolicy.from_config(policy_config(**torch_cfg), model=copy.deepcopy(model))
    mp = MegatronPolicy.from_config(
        policy_config(**torch_cfg, megatron_cfg=megatron_cfg), policy_path=root, device="cpu"
    )
    assert mp.max_grad_norm == 0.2
    loss_fn = ClippedPGLoss()
    lrs = []
    for seed in (0, 1):
        batch = make_batch(hf, seed=seed)
        expected = hf.train(batch, loss_fn, global_batch_size=6, micro_batch_size=3)
        got = mp.train(batch, loss_fn, global_batch_size=6, micro_batch_size=3)
        assert_close(got["grad_norm"], expected["grad_norm"], atol=1e-6, rtol=1e-5)
        lrs.append((got["lr"], expected["lr"]))
    assert_close(torch.tensor(lrs), torch.tensor([[1e-4, 1e-4], [5.5e-4, 5.5e-4]]), atol=1e-12, rtol=1e-9)
    assert mp.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    hf_after, mp_after = hf.model.state_dict(), mp.hf_state_dict()
    for name, weight in hf_after.items():
        assert_close(mp_after[name], weight, atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize(
    ("style", "warmup", "decay"), [("constant", 3, 10), ("linear", 3, 10), ("cosine", 0, 8), ("cosine", 4, 12)]
)
def test_lr_schedule_equals_megatron_optimizer_param_scheduler(style, warmup, decay):
    """LambdaLR over MegatronLRSchedule gives megatron-core's OptimizerParamScheduler LR at every step."""
    from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

    param = torch.nn.Parameter(torch.zeros(1))
    ours = torch.optim.SGD([param], lr=2e-3)
    schedule = MegatronLRSchedule(
        lr=2e-3, min_lr=2e-4, style=style, warmup_iters=warmup, warmup_init=1e-4, decay_iters=decay
    )
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(ours, schedule)
    theirs = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    reference = OptimizerParamScheduler(
        theirs,
        init_lr=1e-4,
        max_lr=2e-3,
        min_lr=2e-4,
        lr_warmup_steps=warmup,
        lr_decay_steps=decay,
        lr_decay_style=style,
        start_wd=0.0,
        end_wd=0.0,
        wd_incr_steps=decay,
        wd_incr_style="constant",
    )
    for _ in range(decay + 4):
        assert ours.param_groups[0]["lr"] == pytest.approx(theirs.param_groups[0]["lr"], rel=1e-12, abs=1e-15)
        lambda_lr.step()
        reference.step(1)


def test_lr_schedule_hand_values():
    """Linear warm-up 0 -> 1 over 4 steps, then linear decay to 0.1 at step 10, then 0.1."""
    s = MegatronLRSchedule(lr=1.0, min_lr=0.1, style="linear", warmup_iters=4, warmup_init=0.0, decay_iters=10)
    assert [s.at(n) for n in (0, 2, 4)] == [0.0, 0.5, 1.0]
    assert s.at(7) == pytest.approx(0.1 + 0.5 * 0.9)
    assert s.at(10) == pytest.approx(0.1) and s.at(11) == 0.1


def test_weight_decay_skips_biases_and_one_dimensional_tensors(checkpoints):
    """Megatron's rule: matrices decay; biases (Qwen2 QKV) and norm weights are in a weight_decay = 0 group."""
    cfg = policy_cfg(megatron_cfg={"enabled": True, "optimizer": {"lr": 1e-4, "weight_decay": 0.05}})
    mp = MegatronPolicy.from_config(cfg, policy_path=checkpoints["qwen2"][0], device="cpu")
    names = {id(p): n for n, p in mp.model.named_parameters()}
    decay, no_decay = mp.optimizer.param_groups
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    decayed = {names[id(p)] for p in decay["params"]}
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert decayed | skipped == set(names.values()) and not decayed & skipped
    assert {"embedding.word_embeddings.weight", "decoder.layers.0.self_attention.linear_qkv.weight"} <= decayed
    assert {
        "decoder.layers.0.self_attention.linear_qkv.bias",
        "decoder.final_layernorm.weight",
        "decoder.layers.1.input_layernorm.weight",
    } <= skipped
    assert all(p.dim() == 1 for p in no_decay["params"]) and all(p.dim() == 2 for p in decay["params"])


def test_state_dict_round_trip_resumes_identically(checkpoints, tmp_path):
    """state_dict -> safetensors-savable model state; a fresh policy loaded from it continues the same way."""
    from safetensors.torch import load_file, save_file

    cfg = policy_cfg(
        megatron_cfg={
            "enabled": True,
            "optimizer": {"lr": 1e-3},
            "scheduler": {"lr_decay_style": "linear", "lr_decay_iters": 5},
        }
    )
    root, _ = checkpoints["llama"]
    first = MegatronPolicy.from_config(cfg, policy_path=root, device="cpu")
    hf = HFPolicy.from_config(policy_cfg(), model=copy.deepcopy(checkpoints["llama"][1]))
    loss_fn = ClippedPGLoss()
    first.train(make_batch(hf, seed=0), loss_fn, global_batch_size=6, micro_batch_size=6)
    state = first.state_dict()  # saved as the step checkpoints do: safetensors weights, torch.save the rest
    save_file({k: v.contiguous() for k, v in state["model"].items()}, str(tmp_path / "model.safetensors"))
    torch.save({k: v for k, v in state.items() if k != "model"}, tmp_path / "optimizer.pt")
    resumed = MegatronPolicy.from_config(cfg, policy_path=root, device="cpu")
    resumed.load_state_dict(
        {
            **torch.load(tmp_path / "optimizer.pt", weights_only=False),
            "model": load_file(str(tmp_path / "model.safetensors")),
        }
    )
    batch = make_batch(hf, seed=1)
    a = first.train(batch, loss_fn, global_batch_size=6, micro_batch_size=6)
    b = resumed.train(batch, loss_fn, global_batch_size=6, micro_batch_size=6)
    assert a == b
    for name, weight in first.model_state().items():
        assert torch.equal(resumed.model_state()[name], weight), name


def test_hf_model_carries_the_trained_weights(checkpoints, tmp_path):
    """hf_model() after a step scores like the policy and saves as a checkpoint_megatron that reloads to the same
    log-probs (the final artifact); hf_state_dict() refits an HF model strictly (the generation refit)."""
    hf, mp = both(checkpoints, "qwen2", policy_cfg())
    batch = make_batch(hf)
    mp.train(batch, ClippedPGLoss(), global_batch_size=6, micro_batch_size=3)
    exported = mp.hf_model()
    assert exported.config.tie_word_embeddings and exported.lm_head.weight is exported.model.embed_tokens.weight
    ids, mask = batch["input_ids"], batch["attention_mask"]
    rescored = HFPolicy.from_config(policy_cfg(), model=exported).get_logprobs(ids, mask, micro_batch_size=6)
    assert_close(rescored, mp.get_logprobs(ids, mask, micro_batch_size=6), atol=1e-5, rtol=1e-5)
    hf.model.load_state_dict(mp.hf_state_dict(), strict=True)  # what the HF generation backend's refit does
    assert_close(hf.get_logprobs(ids, mask, micro_batch_size=6), rescored, atol=0, rtol=0)
    save_hf_model_as_megatron(exported, None, tmp_path / "artifact", 1)
    reloaded = MegatronPolicy.from_config(policy_cfg(), policy_path=tmp_path / "artifact", device="cpu")
    assert_close(
        reloaded.get_logprobs(ids, mask, micro_batch_size=6),
        mp.get_logprobs(ids, mask, micro_batch_size=6),
        atol=0,
        rtol=0,
    )


@pytest.mark.parametrize(
    ("megatron_cfg", "message"),
    [
        ({"optimizer": {"lr": 1e-3, "min_lr": 2e-3}}, r"optimizer\.min_lr: must lie in \[0, lr=0\.001\]"),
        ({"scheduler": {"lr_decay_style": "linear"}}, r"scheduler needs policy\.megatron_cfg\.optimizer"),
        ({"optimizer": {"lr": 1e-3}, "scheduler": {"lr_decay_style": "linear"}}, r"lr_decay_iters: required"),
        (
            {
                "optimizer": {"lr": 1e-3},
                "scheduler": {"lr_decay_style": "cosine", "lr_warmup_iters": 5, "lr_decay_iters": 5},
            },
            r"must exceed lr_warmup_iters",
        ),
        ({"tensor_model_parallel_size": 2}, r"model parallelism is not supported"),
    ],
)
def test_bad_megatron_cfg_is_a_config_error(checkpoints, megatron_cfg, message):
    """Inconsistent megatron_cfg values fail with the key and the fix, before training. (A single bad value,
    such as optimizer: sgd or an unknown key, is the schema's to refuse: test_schema_refuses_bad_megatron_values.)"""
    cfg = policy_cfg(megatron_cfg={"enabled": True, **megatron_cfg})
    with pytest.raises(ConfigError, match=message):
        MegatronPolicy.from_config(cfg, policy_path=checkpoints["llama"][0], device="cpu")


@pytest.mark.parametrize(
    ("optimizer", "path"),
    [({"optimizer": "sgd"}, "optimizer.optimizer"), ({"lr": 0.0}, "optimizer.lr"), ({"lr_mult": 2}, "lr_mult")],
)
def test_schema_refuses_bad_megatron_values(optimizer, path):
    """Values the engine does not check itself are refused by the config schema, naming the key."""
    from rlvr.config.loader import complete_config
    from rlvr.config.schema import violations

    cfg = complete_config({"policy": {"megatron_cfg": {"enabled": True, "optimizer": {"lr": 1e-3, **optimizer}}}})
    assert any(path in message for message in violations(cfg, "rlvr_config.schema.yaml"))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_one_train_call_equals_hf_policy_on_gpu(checkpoints):
    """On a GPU (fp32, TF32 off) the two backends agree on log-probs, loss, grad norm and the SGD update."""
    torch.backends.cuda.matmul.allow_tf32 = False
    root, model = checkpoints["qwen2"]
    hf = HFPolicy.from_config(policy_cfg(), model=copy.deepcopy(model).cuda())
    mp = MegatronPolicy.from_config(policy_cfg(), policy_path=root, device="cuda")
    batch, loss_fn = make_batch(hf), ClippedPGLoss()
    assert_close(
        mp.get_logprobs(batch["input_ids"], batch["attention_mask"], micro_batch_size=6),
        batch["prev_logprobs"],
        atol=1e-4,
        rtol=1e-4,
    )
    expected = hf.train(batch, loss_fn, global_batch_size=3, micro_batch_size=3)
    got = mp.train(batch, loss_fn, global_batch_size=3, micro_batch_size=3)
    assert_close(got["loss"], expected["loss"], atol=1e-5, rtol=1e-4)
    assert_close(got["grad_norm"], expected["grad_norm"], atol=1e-5, rtol=1e-4)
    hf_after, mp_after = hf.model.state_dict(), mp.hf_state_dict()
    for name, weight in hf_after.items():
        assert_close(mp_after[name], weight, atol=1e-5, rtol=1e-4, msg=name)
