"""Fixtures for the data tests: a tiny character-level tokenizer with a chat template."""

from __future__ import annotations

from pathlib import Path

import pytest
from rl_prep_helpers import CHAT_TEMPLATE, MARKERS, QWEN_TEMPLATE


@pytest.fixture(scope="session")
def char_tokenizer_dir(tmp_path_factory) -> Path:
    """An HF tokenizer folder: one token per printable ASCII character, the role markers as special tokens."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0}
    for token in (*MARKERS, "\n", *(chr(c) for c in range(32, 127))):
        vocab.setdefault(token, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", additional_special_tokens=list(MARKERS)
    )
    fast.chat_template = CHAT_TEMPLATE
    folder = tmp_path_factory.mktemp("char_tokenizer")
    fast.save_pretrained(str(folder))
    return folder


_CORPUS = [
    "What is 12 + 30? The answer is 42.",
    "Solve for x: 2x + 3 = 7. x = 2",
    "def add(a, b):\n    return a + b\n",
    "Write a function that returns the sum of a list.",
    "User: hello\nAssistant: hi",
    "print(sum(map(int, input().split())))",
    "Compute the derivative of x^2. \\boxed{2x}",
    "Question: how many apples? Answer: 5",
] * 20


def _bpe_folder(tmp_path_factory, name: str, *, chat_template: str | None, bos: bool) -> Path:
    """A user's HF tokenizer folder: byte-level BPE trained here (no download), Qwen special tokens, optional
    chat template, optional BOS added by the post-processor (Llama style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(
        _CORPUS,
        trainers.BpeTrainer(
            vocab_size=420, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    if bos:
        bos_id = tokenizer.token_to_id("<s>")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token="<s>" if bos else None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
    )
    if chat_template is not None:
        fast.chat_template = chat_template
    folder = tmp_path_factory.mktemp(name)
    fast.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def qwen_tokenizer_dir(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer folder with a Qwen-style chat template (an instruct model's)."""
    return _bpe_folder(tmp_path_factory, "qwen_tok", chat_template=QWEN_TEMPLATE, bos=False)


@pytest.fixture(scope="session")
def base_tokenizer_dir(tmp_path_factory) -> Path:
    """The same tokenizer as a base model ships it: no chat template at all."""
    return _bpe_folder(tmp_path_factory, "base_tok", chat_template=None, bos=False)


@pytest.fixture(scope="session")
def base_bos_tokenizer_dir(tmp_path_factory) -> Path:
    """A base-model tokenizer without a chat template whose encoder adds a BOS token (Llama style)."""
    return _bpe_folder(tmp_path_factory, "base_bos_tok", chat_template=None, bos=True)
