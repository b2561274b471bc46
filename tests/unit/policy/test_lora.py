"""LoRA on the HF policy: config keys, adapters-only training, merged weights, resume, export, and learning.

The model is what a user brings: an HF folder with a byte-level BPE tokenizer and a chat template, a Llama with
tied input/output embeddings, in float32 and in bfloat16.
"""

from __future__ import annotations

import copy
import io
import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rlvr.config import load_step_config
from rlvr.errors import CheckpointError, ConfigError
from rlvr.generation import GenerationConfig
from rlvr.generation.hf import HFGenerationBackend
from rlvr.grpo.advantages import compute_advantages
from rlvr.grpo.loss import ClippedPGLoss
from rlvr.grpo.rollout import to_train_tensors
from rlvr.policy import lora
from rlvr.policy.hf import HFPolicy
from rlvr.steps.index import resolve_step
from tests.unit.schema_config import policy_config

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [f"<|user|>what is {a} + {b}?</s><|assistant|>{a + b}</s>" for a in range(12) for b in range(12)]
UPSTREAM = {
    "enabled": True,
    "target_modules": [],
    "exclude_modules": [],
    "match_all_linear": True,
    "dim": 8,
    "alpha": 32,
    "dropout": 0.0,
    "dropout_position": "post",
    "lora_A_init": "xavier",
    "use_triton": True,
}
ADAMW = {"name": "torch.optim.AdamW", "kwargs": {"lr": 1e-2}}


def build_bpe_tokenizer() -> PreTrainedTokenizerFast:
    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "</s>", "<s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    backend.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", bos_token="<s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tied_llama(
    vocab: int, dtype: torch.dtype = torch.float32, seed: int = 0, init_range: float = 0.1
) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        initializer_range=init_range,
    )
    config.architectures = ["LlamaForCausalLM"]
    return LlamaForCausalLM(config).to(dtype).eval()


@pytest.fixture(scope="module")
def bpe_tokenizer() -> PreTrainedTokenizerFast:
    return build_bpe_tokenizer()


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory, bpe_tokenizer):
    """The user's SFT policy: an HF folder with a BPE tokenizer, a chat template and tied embeddings."""
    folder = tmp_path_factory.mktemp("user") / "sft"
    build_tied_llama(len(bpe_tokenizer)).save_pretrained(folder)
    bpe_tokenizer.save_pretrained(folder)
    return folder


def policy_cfg(folder, **lora_overrides) -> dict:
    return policy_config(
        model_name=str(folder),
        precision="float32",
        optimizer=ADAMW,
        scheduler=None,
        max_grad_norm=1.0,
        generation={"temperature": 1.0},
        dtensor_cfg={"enabled": True, "lora_cfg": {**UPSTREAM, **lora_overrides}},
    )


def make_batch(tokenizer, seed: int = 0) -> dict[str, torch.Tensor]:
    """8 chat-templated sequences, right-padded, loss on the answer tokens, one random advantage per row."""
    g = torch.Generator().manual_seed(seed)
    texts = [CORPUS[int(i)] for i in torch.randint(len(CORPUS), (8,), generator=g)]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    token_mask = enc["attention_mask"].float()
    token_mask[:, :6] = 0
    advantages = torch.randn(8, 1, generator=g).expand_as(token_mask).clone()
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "token_mask": token_mask,
        "sample_mask": torch.ones(8),
        "advantages": advantages,
    }


def pg_loss(lp, data, global_valid_seqs, global_valid_toks):
    """-Σ A·lp·m / N_tok: a plain policy-gradient loss for the mechanics tests."""
    mask = (data["token_mask"] * data["sample_mask"][:, None])[:, 1:]
    return -(data["advantages"][:, 1:] * lp[:, 1:] * mask).sum() / global_valid_toks, {}


def test_upstream_defaults_are_honoured_and_bad_values_are_refused():
    """NeMo-RL's lora_cfg block parses as is; each value rlvr cannot honour is one ConfigError naming its key."""
    settings = lora.lora_settings(policy_config(dtensor_cfg={"lora_cfg": UPSTREAM}))
    assert settings == lora.LoraSettings(dim=8, alpha=32.0, match_all_linear=True, lora_A_init="xavier")
    assert settings.scale == 4.0
    assert (
        lora.lora_settings(policy_config(dtensor_cfg={"lora_cfg": {**UPSTREAM, "enabled": False, "dropout": 0.5}}))
        is None
    )
    bad = [
        ({"dropout": 0.1}, "lora_cfg.dropout=0.1: rlvr keeps the policy in eval mode"),
        ({"target_modules": ["q_proj"]}, "match_all_linear=true adapts every linear layer"),
        ({"match_all_linear": False}, "nothing would train"),
        ({"lora_A_init": "gaussian"}, r"lora_A_init must be one of \['xavier', 'uniform'\]"),
        ({"dim": 0}, "lora_cfg.dim must be an integer >= 1"),
    ]
    for override, message in bad:
        with pytest.raises(ConfigError, match=message):
            lora.lora_settings(policy_config(dtensor_cfg={"lora_cfg": {**UPSTREAM, **override}}))


def test_config_time_refusals_through_the_step_loader():
    """The tiny step config with LoRA validates; megatron-core + LoRA and data-parallel LoRA fail before compute."""
    step = resolve_step("rl/nemo_rl/rlvr")
    on = ["policy.dtensor_cfg.lora_cfg.enabled=true"]
    cfg = load_step_config(step, "tiny", on).engine_view()
    assert cfg["policy"]["dtensor_cfg"]["lora_cfg"]["enabled"] is True
    with pytest.raises(ConfigError, match="needs the PyTorch/HF policy backend"):
        load_step_config(step, "tiny", [*on, "policy.megatron_cfg.enabled=true", "policy.dtensor_cfg.enabled=false"])
    with pytest.raises(ConfigError, match="2 data-parallel policy workers"):
        load_step_config(step, "tiny", [*on, "cluster.num_workers=2"])
    with pytest.raises(ConfigError, match="lora_cfg.*rnak"):
        load_step_config(step, "tiny", [*on, "policy.dtensor_cfg.lora_cfg.rnak=4"])


def test_only_adapters_train_and_the_optimizer_holds_only_them(user_folder, bpe_tokenizer):
    """match_all_linear adapts the 7 projections of each layer (not the tied head); a step moves A/B only."""
    policy = HFPolicy.from_config(policy_cfg(user_folder), device="cpu")
    trainable = {n for n, p in policy.model.named_parameters() if p.requires_grad}
    assert len(trainable) == 2 * 7 * 2 and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert not any("lm_head" in n or "embed_tokens" in n for n in trainable)
    in_optimizer = {id(p) for group in policy.optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for n, p in policy.model.named_parameters() if n in trainable}
    base_before = {n: p.detach().clone() for n, p in policy.model.named_parameters() if n not in trainable}
    adapters_before = {n: t.clone() for n, t in lora.adapter_state(policy.model).items()}
    metrics = policy.train(make_batch(bpe_tokenizer), pg_loss, global_batch_size=8, micro_batch_size=4)
    assert metrics["grad_norm"] > 0
    for name, tensor in policy.model.named_parameters():
        if name in trainable:
            continue
        assert torch.equal(tensor, base_before[name]), name
    moved = [n for n, t in lora.adapter_state(policy.model).items() if not torch.equal(t, adapters_before[n])]
    assert any(".lora_B." in n for n in moved) and any(".lora_A." in n for n in moved)


def test_target_and_exclude_patterns(user_folder):
    """Last-component names and full-name globs select modules; an unmatched pattern names the real ones."""
    model = AutoModelForCausalLM.from_pretrained(user_folder)
    settings = lora.LoraSettings(
        match_all_linear=False, target_modules=("q_proj", "v_proj"), exclude_modules=("model.layers.1.*",)
    )
    assert lora.select_target_modules(model, settings) == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
    ]
    with pytest.raises(ConfigError, match=r"target_modules: 'query' matches no linear layer.*'q_proj'"):
        lora.select_target_modules(model, lora.LoraSettings(match_all_linear=False, target_modules=("query",)))
    with pytest.raises(ConfigError, match="leaves no layer to adapt"):
        lora.select_target_modules(model, lora.LoraSettings(exclude_modules=("*",)))


def test_init_is_deterministic_and_starts_at_the_base_policy(user_folder, bpe_tokenizer):
    """B = 0 at the start (the LoRA policy is the SFT policy); A depends on the module name, not the global RNG."""
    base = AutoModelForCausalLM.from_pretrained(user_folder)
    batch = make_batch(bpe_tokenizer)
    torch.manual_seed(1)
    a = HFPolicy.from_config(policy_cfg(user_folder), device="cpu")
    torch.manual_seed(2)
    b = HFPolicy.from_config(policy_cfg(user_folder), device="cpu")
    for (name, x), y in zip(lora.adapter_state(a.model).items(), lora.adapter_state(b.model).values()):
        assert torch.equal(x, y), name
    lp = a.get_logprobs(batch["input_ids"], batch["attention_mask"], micro_batch_size=8)
    assert torch.equal(lp, HFPolicy(base).get_logprobs(batch["input_ids"], batch["attention_mask"], micro_batch_size=8))
    uniform = HFPolicy.from_config(policy_cfg(user_folder, lora_A_init="uniform"), device="cpu")
    first = next(t for n, t in lora.adapter_state(uniform.model).items() if ".lora_A." in n)
    assert float(first.abs().max()) <= 1 / 32**0.5 + 1e-6  # Kaiming-uniform bound of fan_in 32, a = sqrt(5)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_merged_weights_are_what_the_lora_model_computes(user_folder, bpe_tokenizer, precision):
    """model_state() = W + (alpha/dim)·B·A under plain HF names, equal to peft's merge_and_unload, and a plain model
    refitted with it generates what the LoRA policy would; the policy itself is left unmerged."""
    policy = HFPolicy.from_config({**policy_cfg(user_folder), "precision": precision}, device="cpu")
    policy.train(make_batch(bpe_tokenizer), pg_loss, global_batch_size=8, micro_batch_size=8)
    merged = policy.model_state()
    plain = AutoModelForCausalLM.from_pretrained(user_folder, dtype=policy.model.dtype).eval()
    assert set(merged) == set(plain.state_dict())
    peft_merged = copy.deepcopy(policy.model).merge_and_unload().state_dict()
    for name, tensor in merged.items():
        assert tensor.dtype == plain.state_dict()[name].dtype
        torch.testing.assert_close(tensor, peft_merged[name], rtol=0, atol=0 if precision == "float32" else 1e-2)
    q = "model.layers.0.self_attn.q_proj.weight"
    layer = policy.model.get_base_model().model.layers[0].self_attn.q_proj
    delta = (layer.lora_B["default"].weight.float() @ layer.lora_A["default"].weight.float()) * 4.0
    torch.testing.assert_close(
        merged[q].float(),
        layer.base_layer.weight.float() + delta,
        **({} if precision == "float32" else {"rtol": 0, "atol": 1e-2}),
    )
    assert not torch.equal(merged[q], plain.state_dict()[q])
    assert not getattr(layer, "merged", False)  # generation refits never merge in place
    if precision == "float32":
        backend = HFGenerationBackend(plain, bpe_tokenizer)
        backend.update_weights(merged)
        cfg = GenerationConfig(max_new_tokens=6, greedy=True)
        text = bpe_tokenizer.apply_chat_template(
            [{"role": "user", "content": "what is 3 + 4?"}], add_generation_prompt=True, tokenize=False
        )
        prompt = [bpe_tokenizer(text, add_special_tokens=False)["input_ids"]]
        [merged_out] = backend.generate(prompt, cfg, seed=0)
        [lora_out] = HFGenerationBackend(policy.model, bpe_tokenizer).generate(prompt, cfg, seed=0)
        assert merged_out.token_ids == lora_out.token_ids  # same function; log-probs differ only by rounding
        torch.testing.assert_close(torch.tensor(merged_out.logprobs), torch.tensor(lora_out.logprobs))


def test_state_dict_holds_the_adapter_and_resumes_bit_exactly(user_folder, bpe_tokenizer):
    """A step checkpoint of a LoRA policy is its adapter (+ AdamW state); a fresh LoRA policy on the same base
    restored from it continues to the bit; an adapter of another rank is refused."""
    original = HFPolicy.from_config(policy_cfg(user_folder), device="cpu")
    original.train(make_batch(bpe_tokenizer, seed=1), pg_loss, global_batch_size=4, micro_batch_size=2)
    state = original.state_dict()
    assert set(state["model"]) == set(lora.adapter_state(original.model))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    resumed = HFPolicy.from_config(policy_cfg(user_folder, lora_A_init="uniform"), device="cpu")
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    a = original.train(make_batch(bpe_tokenizer, seed=2), pg_loss, global_batch_size=4, micro_batch_size=2)
    b = resumed.train(make_batch(bpe_tokenizer, seed=2), pg_loss, global_batch_size=4, micro_batch_size=2)
    assert a == b
    for (name, p), q in zip(original.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name
    other = HFPolicy.from_config(policy_cfg(user_folder, dim=4), device="cpu")
    with pytest.raises(CheckpointError, match="lora_cfg.dim"):
        other.load_model_state(state["model"])
    with pytest.raises(CheckpointError, match="does not hold this policy's LoRA adapter"):
        other.load_model_state(AutoModelForCausalLM.from_pretrained(user_folder).state_dict())


def test_artifact_export_and_peft_adapter_agree(user_folder, bpe_tokenizer, tmp_path):
    """checkpoint_megatron → HF export hold the merged weights; the PEFT adapter folder loaded on the user's base
    with PeftModel.from_pretrained gives the same logits."""
    from peft import PeftModel

    from rlvr.convert.hf_megatron import megatron_to_hf, save_hf_model_as_megatron

    policy = HFPolicy.from_config(policy_cfg(user_folder), device="cpu")
    for seed in range(2):
        policy.train(make_batch(bpe_tokenizer, seed=seed), pg_loss, global_batch_size=8, micro_batch_size=8)
    save_hf_model_as_megatron(policy.hf_model(), user_folder, tmp_path / "ckpt", 2)
    megatron_to_hf(str(tmp_path / "ckpt"), str(tmp_path / "hf"))
    policy.save_adapter(tmp_path / "adapter", base_model=str(user_folder))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "adapter").iterdir()}
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        user_folder
    )
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert exported.config.tie_word_embeddings and exported.lm_head.weight is exported.model.embed_tokens.weight
    for name, tensor in policy.model_state().items():
        assert torch.equal(exported.state_dict()[name], tensor), name
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(user_folder), tmp_path / "adapter").eval()
    batch = make_batch(bpe_tokenizer, seed=5)
    with torch.no_grad():
        want = exported(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = adapted(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        base = AutoModelForCausalLM.from_pretrained(user_folder)(input_ids=batch["input_ids"]).logits
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert float((want - base).abs().max()) > 1e-3  # the adapter did change the policy


def test_a_few_lora_grpo_steps_raise_the_reward(bpe_tokenizer):
    """GRPO on an overfit problem (reward 1 when the first answer token is one the random policy says about 1 time
    in 20): with only rank-2 adapters on the q/v/down projections training, the reward becomes the majority."""
    model = build_tied_llama(len(bpe_tokenizer), seed=3, init_range=0.3)
    cfg = {
        "precision": "float32",
        "optimizer": {"name": "torch.optim.AdamW", "kwargs": {"lr": 1e-2}},
        "scheduler": None,
        "max_grad_norm": 1.0,
        "generation": {"temperature": 1.0},
        "dtensor_cfg": {
            "lora_cfg": {
                **UPSTREAM,
                "match_all_linear": False,
                "dim": 2,
                "alpha": 4,
                "target_modules": ["q_proj", "v_proj", "down_proj"],
            }
        },
    }
    policy = HFPolicy.from_config(policy_config(**cfg), model=model)
    assert sum(p.numel() for p in policy.model.parameters() if p.requires_grad) < 0.1 * sum(
        p.numel() for p in policy.model.parameters()
    )
    prompts = [bpe_tokenizer(f"<|user|>what is {a} + 2?</s><|assistant|>")["input_ids"] for a in range(4)]

    def first_token_probs() -> torch.Tensor:
        with torch.no_grad():
            return torch.stack(
                [policy.model(input_ids=torch.tensor([p])).logits[0, -1].softmax(-1) for p in prompts]
            ).mean(0)

    before = first_token_probs()
    target = int(before.argsort(descending=True)[3])
    generation = GenerationConfig(max_new_tokens=2, temperature=1.0)
    loss_fn = ClippedPGLoss({"reference_policy_kl_penalty": 0.0})
    rewards_per_step = []
    for step in range(14):
        ids = [p for p in prompts for _ in range(8)]
        outputs = HFGenerationBackend(policy.model, bpe_tokenizer).generate(ids, generation, seed=step)
        rewards = torch.tensor([float(o.token_ids[0] == target) for o in outputs])
        rewards_per_step.append(float(rewards.mean()))
        batch = to_train_tensors(ids, outputs, pad_id=0)
        batch["sample_mask"] = torch.ones(len(ids))
        batch["prev_logprobs"] = policy.get_logprobs(batch["input_ids"], batch["attention_mask"], micro_batch_size=32)
        batch["reference_policy_logprobs"] = batch["prev_logprobs"].clone()
        adv = compute_advantages(rewards, torch.arange(4).repeat_interleave(8))
        batch["advantages"] = adv[:, None] * batch["token_mask"]
        policy.train(batch, loss_fn, global_batch_size=32, micro_batch_size=16)
    after = first_token_probs()
    assert before[target] < 0.1 and after[target] > 0.5, (float(before[target]), float(after[target]))
    assert sum(rewards_per_step[-3:]) / 3 > 0.5 > 0.1 > sum(rewards_per_step[:2]) / 2, rewards_per_step
