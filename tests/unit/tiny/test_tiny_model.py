"""Tests of rlvr.tiny.model and rlvr.tiny.accuracy: a real LlamaForCausalLM, saved and reloaded as an HF folder."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

from rlvr.tiny.accuracy import generate_answers, prompt_ids, score_answer
from rlvr.tiny.config import TinyConfig
from rlvr.tiny.model import count_parameters, make_tiny_llama
from rlvr.tiny.tokenizer import build_char_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """The default character tokenizer (vocabulary 29)."""
    return build_char_tokenizer(tmp_path_factory.mktemp("tok"))


def test_parameter_count_is_hand_computed(tokenizer):
    """Default shape: embed 29*128, per layer q,o 128*128, k,v 128*64, MLP 3*128*384, 2 norms 128; final norm; head."""
    model = make_tiny_llama(TinyConfig(), tokenizer)
    assert isinstance(model, LlamaForCausalLM)
    per_layer = 2 * 128 * 128 + 2 * 128 * 64 + 3 * 128 * 384 + 2 * 128
    assert count_parameters(model) == 29 * 128 + 4 * per_layer + 128 + 29 * 128 == 795_008
    assert model.config.num_key_value_heads == 2 and model.config.vocab_size == len(tokenizer) == 29
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (2, 3, 0)


def test_same_seed_same_weights_and_global_rng_untouched(tokenizer):
    """Initialisation depends on cfg.seed only and does not consume the caller's RNG."""
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    a = make_tiny_llama(TinyConfig(), tokenizer).state_dict()
    torch.testing.assert_close(torch.rand(3), before)
    b = make_tiny_llama(TinyConfig(), tokenizer).state_dict()
    c = make_tiny_llama(TinyConfig(seed=5), tokenizer).state_dict()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])


def test_saved_folder_loads_with_auto_classes_and_generates(tokenizer, tmp_path):
    """save_pretrained + both from_pretrained calls give the same logits and a generate that stops within budget."""
    model = make_tiny_llama(TinyConfig(), tokenizer)
    model.save_pretrained(tmp_path)
    build_char_tokenizer(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= names
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded, LlamaForCausalLM)
    ids = torch.tensor([prompt_ids(tok, "12+34")])  # [1, S]
    torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert loaded.generation_config.eos_token_id == tok.eos_token_id == 3
    out = loaded.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=5)
    assert out.shape[0] == 1 and ids.shape[1] < out.shape[1] <= ids.shape[1] + 5
    torch.testing.assert_close(out[:, : ids.shape[1]], ids)


def test_math_verify_scores_plain_integers():
    """The reward scores the plain-integer answer format: '46' vs \\boxed{46} and '-7' vs \\boxed{-7} are correct."""
    assert score_answer("46", "46") == 1.0
    assert score_answer("-7", "-7") == 1.0
    assert score_answer("7", "-7") == 0.0
    assert score_answer("460", "46") == 0.0
    assert score_answer("", "46") == 0.0


def test_generate_answers_batched_equals_one_by_one(tokenizer):
    """Length-bucketed batch generation gives each prompt the same greedy answer as generating it alone."""
    model = make_tiny_llama(TinyConfig(seed=3), tokenizer)
    problems = ["1+2", "34-56", "7*8", "90+12", "3-4"]
    batched = generate_answers(model, tokenizer, problems, max_new_tokens=6)
    alone = [generate_answers(model, tokenizer, [p], max_new_tokens=6)[0] for p in problems]
    assert batched == alone
    assert all(len(group) == 1 for group in batched)


def test_sampled_answers_are_seeded(tokenizer):
    """Sampling gives samples_per_prompt answers per problem, the same for the same seed."""
    model = make_tiny_llama(TinyConfig(), tokenizer)
    problems = ["1+2", "34-56"]
    first = generate_answers(model, tokenizer, problems, samples_per_prompt=3, temperature=1.0, seed=11)
    again = generate_answers(model, tokenizer, problems, samples_per_prompt=3, temperature=1.0, seed=11)
    assert first == again
    assert [len(g) for g in first] == [3, 3]
