"""Mixed precision: a bf16 policy computes in bf16 and trains fp32 master weights with fp32 optimizer state.

The fixture is what a user hands us: an HF folder saved in bf16 (Qwen2, tied embeddings) with a BPE tokenizer
and a chat template; batches are chat-templated prompts plus responses.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch.testing import assert_close

from rlvr.errors import CheckpointError, ConfigError
from rlvr.policy.hf import HFPolicy, load_causal_lm
from rlvr.policy.precision import MasterWeights, parse_precision
from tests.unit.schema_config import policy_config

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "What is 12 plus 30? The answer is 42.",
    "Compute 7 times 6 and give the result: 42.",
    "Solve for x: x + 5 = 9, so x = 4.",
    "The sum of the digits of 123 is 6.",
] * 20
ADAMW = {"name": "torch.optim.AdamW", "kwargs": {"lr": 1e-6, "weight_decay": 0.01}}


def save_user_folder(folder) -> None:
    """A bf16 Qwen2 with tied embeddings and a byte-level BPE tokenizer with a chat template, as a user has."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend.train_from_iterator(
        CORPUS,
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user_policy")
    save_user_folder(folder)
    return folder


def chat_batch(folder) -> dict[str, torch.Tensor]:
    """6 right-padded chat rows (templated prompt + answer); loss on the answer tokens; one advantage per row."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    rows, prompt_lengths = [], []
    for text in CORPUS[:6]:
        question, _, answer = text.partition("?")
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question + "?"}], tokenize=False, add_generation_prompt=True
        )
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(answer.strip() or "42", add_special_tokens=False)["input_ids"]
        rows.append(prompt_ids + answer_ids + [tokenizer.eos_token_id])
        prompt_lengths.append(len(prompt_ids))
    width = max(len(r) for r in rows)
    input_ids = torch.full((6, width), tokenizer.pad_token_id)
    attention = torch.zeros(6, width, dtype=torch.long)
    token_mask = torch.zeros(6, width)
    for i, (row, plen) in enumerate(zip(rows, prompt_lengths)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
        token_mask[i, plen : len(row)] = 1
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 1.5, -1.5])[:, None].expand(6, width).clone()
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "token_mask": token_mask,
        "sample_mask": torch.ones(6),
        "advantages": advantages,
    }


def pg_loss(lp, data, global_valid_seqs, global_valid_toks):
    mask = (data["token_mask"] * data["sample_mask"][:, None])[:, 1:]
    return -(data["advantages"][:, 1:] * lp[:, 1:] * mask).sum() / global_valid_toks, {}


def policies(folder, **cfg) -> tuple[HFPolicy, HFPolicy]:
    """The user's bf16 policy and an fp32 policy holding exactly the same (bf16-representable) weights."""
    base = {"model_name": str(folder), "optimizer": ADAMW, "scheduler": None, "max_grad_norm": 1.0, **cfg}
    bf16 = HFPolicy.from_config(policy_config(**base, precision="bfloat16"), device="cpu")
    fp32 = HFPolicy.from_config(policy_config(**base, precision="float32"), device="cpu")
    return bf16, fp32


def weights(policy: HFPolicy) -> dict[str, torch.Tensor]:
    """What the optimizer steps: the fp32 masters (for an fp32 policy, its own weights), cloned."""
    return {name: p.detach().clone() for name, p in policy.master.named_parameters()}


def test_lr_1e6_adamw_step_moves_bf16_weights_as_it_moves_fp32_ones(user_folder):
    """The defect: AdamW on bf16 parameters at lr 1e-6 changed ~1% of the elements. With fp32 masters the bf16
    policy's update changes as many elements as the fp32 policy's and points the same way."""
    bf16, fp32 = policies(user_folder)
    batch = chat_batch(user_folder)
    before_bf16, before_fp32 = weights(bf16), weights(fp32)
    assert all(torch.equal(before_bf16[n], before_fp32[n]) for n in before_fp32)  # same starting point
    bf16.train(batch, pg_loss, global_batch_size=6, micro_batch_size=3)
    fp32.train(batch, pg_loss, global_batch_size=6, micro_batch_size=3)
    after_bf16, after_fp32 = weights(bf16), weights(fp32)
    delta_bf16 = torch.cat([(after_bf16[n] - before_bf16[n]).flatten() for n in before_fp32])
    delta_fp32 = torch.cat([(after_fp32[n] - before_fp32[n]).flatten() for n in before_fp32])
    changed_bf16 = (delta_bf16 != 0).float().mean().item()
    changed_fp32 = (delta_fp32 != 0).float().mean().item()
    assert changed_fp32 > 0.5
    assert abs(changed_bf16 - changed_fp32) < 0.02, (changed_bf16, changed_fp32)
    cosine = torch.nn.functional.cosine_similarity(delta_bf16, delta_fp32, dim=0).item()
    assert cosine > 0.98, cosine
    assert delta_bf16.norm() == pytest.approx(delta_fp32.norm().item(), rel=0.05)

    # The same step without master weights (the old behaviour) leaves most bf16 elements where they were.
    model = load_causal_lm(str(user_folder), precision="bfloat16", device="cpu")
    naive = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)
    start = [p.detach().clone() for p in model.parameters()]
    HFPolicy(model)._scores(batch["input_ids"], batch["attention_mask"], True).sum().backward()
    naive.step()
    changed = torch.cat([(p.detach() != s).flatten() for p, s in zip(model.parameters(), start)]).float().mean()
    assert changed < 0.2 * changed_fp32


def test_bf16_policy_learns_like_fp32_over_20_small_steps(user_folder):
    """20 AdamW steps at lr 1e-5 raising the answers' log-probs: the bf16 policy gains what the fp32 one gains;
    stepping the bf16 weights directly (the old behaviour) gains a fraction, most updates rounding away."""
    batch = {**chat_batch(user_folder)}
    batch["advantages"] = torch.ones_like(batch["advantages"])
    answers = batch["token_mask"].bool()
    adamw = {"name": "torch.optim.AdamW", "kwargs": {"lr": 1e-5, "weight_decay": 0.0}}

    def mean_lp(policy):
        return policy.get_logprobs(batch["input_ids"], batch["attention_mask"], micro_batch_size=6)[answers].mean()

    gains = {}
    for policy, name in zip(policies(user_folder, optimizer=adamw), ("bfloat16", "float32")):
        start = mean_lp(policy)
        for _ in range(20):
            policy.train(batch, pg_loss, global_batch_size=6, micro_batch_size=6)
        gains[name] = (mean_lp(policy) - start).item()
    model = load_causal_lm(str(user_folder), precision="bfloat16", device="cpu")
    scorer, naive = HFPolicy(model), torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    start = mean_lp(scorer)
    for _ in range(20):
        naive.zero_grad()
        lp = scorer._scores(batch["input_ids"], batch["attention_mask"], True)
        (-(lp[:, 1:] * batch["token_mask"][:, 1:]).sum() / batch["token_mask"][:, 1:].sum()).backward()
        naive.step()
    gains["bf16 without masters"] = (mean_lp(scorer) - start).item()
    assert gains["float32"] > 0.03, gains
    assert abs(gains["bfloat16"] - gains["float32"]) < 0.25 * gains["float32"], gains
    assert gains["bf16 without masters"] < 0.4 * gains["float32"], gains


def test_optimizer_steps_fp32_masters_with_fp32_state_and_the_model_stays_bf16(user_folder):
    bf16, _ = policies(user_folder)
    bf16.train(chat_batch(user_folder), pg_loss, global_batch_size=6, micro_batch_size=6)
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}
    stepped = [p for group in bf16.optimizer.param_groups for p in group["params"]]
    assert stepped and all(p.dtype == torch.float32 for p in stepped)
    states = [t for p in stepped for t in bf16.optimizer.state[p].values() if t.dim() > 0]
    assert states and all(t.dtype == torch.float32 for t in states)  # exp_avg, exp_avg_sq
    # Tied embeddings: one master for the shared tensor, and the model's weights are the rounded masters.
    assert bf16.model.lm_head.weight is bf16.model.model.embed_tokens.weight
    model_params = dict(bf16.model.named_parameters())
    for name, master in bf16.master.named_parameters():
        assert torch.equal(model_params[name], master.detach().to(torch.bfloat16))


def test_bf16_logprobs_are_fp32_and_close_to_the_fp32_policy(user_folder):
    bf16, fp32 = policies(user_folder)
    batch = chat_batch(user_folder)
    lp_bf16 = bf16.get_logprobs(batch["input_ids"], batch["attention_mask"], micro_batch_size=6)
    lp_fp32 = fp32.get_logprobs(batch["input_ids"], batch["attention_mask"], micro_batch_size=6)
    assert lp_bf16.dtype == torch.float32
    real = batch["attention_mask"].bool()
    assert (lp_bf16 - lp_fp32)[real].abs().max() < 0.05
    assert (lp_bf16 - lp_fp32)[real].abs().mean() < 0.01


def test_generation_gets_compute_dtype_weights(user_folder):
    """model_state() (what refits vLLM / an HF generator) is bf16 and equals the rounded masters."""
    bf16, _ = policies(user_folder, optimizer={"name": "torch.optim.AdamW", "kwargs": {"lr": 1e-3}})
    bf16.train(chat_batch(user_folder), pg_loss, global_batch_size=6, micro_batch_size=6)
    state = bf16.model_state()
    assert {t.dtype for t in state.values() if t.is_floating_point()} == {torch.bfloat16}
    masters = dict(bf16.master.named_parameters())
    assert torch.equal(state["model.norm.weight"], masters["model.norm.weight"].detach().to(torch.bfloat16))
    generator_model = load_causal_lm(str(user_folder), precision="bfloat16", device="cpu")
    generator_model.load_state_dict(state)  # the refit a generation backend does
    assert torch.equal(generator_model.lm_head.weight, bf16.model.lm_head.weight)


def test_micro_batch_gradients_accumulate_in_fp32():
    """1 + 1e-3 is 1 in bf16 (ulp 2^-7); the master's fp32 grad keeps the small micro-batch's contribution."""
    param = torch.nn.Parameter(torch.zeros(4, dtype=torch.bfloat16))
    master = MasterWeights([("w", param)])
    for value in (1.0, 1e-3):
        param.grad = torch.full((4,), value, dtype=torch.bfloat16)
        master.accumulate_grads()
        assert param.grad is None
    (w,) = master.parameters()
    assert w.dtype == torch.float32
    assert_close(w.grad, torch.full((4,), 1.0 + 1e-3), atol=1e-5, rtol=0)


def test_state_dict_round_trip_keeps_the_masters(user_folder):
    """A resumed bf16 policy continues with the fp32 masters, not with their bf16 rounding."""
    lr = {"optimizer": {"name": "torch.optim.AdamW", "kwargs": {"lr": 1e-4}}}
    original, _ = policies(user_folder, **lr)
    batch = chat_batch(user_folder)
    original.train(batch, pg_loss, global_batch_size=6, micro_batch_size=6)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    saved = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert saved["master_weights"] and all(t.dtype == torch.float32 for t in saved["master_weights"].values())
    resumed, _ = policies(user_folder, **lr)
    resumed.load_state_dict(saved)
    a = original.train(batch, pg_loss, global_batch_size=6, micro_batch_size=6)
    b = resumed.train(batch, pg_loss, global_batch_size=6, micro_batch_size=6)
    assert a == b
    for (_, p), (_, q) in zip(original.master.named_parameters(), resumed.master.named_parameters()):
        assert torch.equal(p, q)
    # Weights only (checkpointing.save_optimizer: false): the masters restart from the loaded weights.
    fresh, _ = policies(user_folder, **lr)
    fresh.load_model_state(original.model_state())
    for (_, p), (_, q) in zip(fresh.master.named_parameters(), original.master.named_parameters()):
        assert torch.equal(p.detach().to(torch.bfloat16), q.detach().to(torch.bfloat16))
    with pytest.raises(CheckpointError, match="master weights"):
        policies(user_folder, **lr)[1].load_state_dict(saved)  # an fp32 policy has no masters to restore


@pytest.mark.parametrize("name", ["float16", "fp16"])
def test_float16_is_refused_with_the_fix(user_folder, name):
    with pytest.raises(ConfigError, match=r"policy\.precision: .*loss scaling.*use bfloat16"):
        HFPolicy.from_config(policy_config(model_name=str(user_folder), precision=name), device="cpu")
    with pytest.raises(ConfigError, match="loss scaling"):
        load_causal_lm(str(user_folder), precision=name, device="cpu")
    with pytest.raises(ConfigError, match=r"unknown 'float8'"):
        parse_precision("float8")


def test_frozen_reference_policy_has_no_masters(user_folder):
    bf16, _ = policies(user_folder)
    frozen = HFPolicy(copy.deepcopy(bf16.model).requires_grad_(False))
    assert frozen.optimizer is None and not frozen.master.has_copies and bf16.master.has_copies
