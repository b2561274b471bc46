"""Shared fixtures of the unit tests: a tiny random Llama and a character tokenizer, built locally (no downloads)."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>"]
CHARS = list("0123456789+=abcdx")
PAD, EOS = 0, 1


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character; specials are skipped when decoding with ``skip_special_tokens``."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )


def build_model(seed: int = 0, init_range: float = 0.5) -> LlamaForCausalLM:
    """hidden 32, 2 layers, GQA 4/2 heads; a wide init makes the next-token distributions peaked."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(SPECIALS) + len(CHARS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=2,
        initializer_range=init_range,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return build_model()


@pytest.fixture(scope="module")
def make_model():
    """``make_model(seed)``: a fresh tiny model with other random weights."""
    return build_model
