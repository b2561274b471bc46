"""Fixtures for the data tests: a tiny character-level tokenizer with a chat template."""

from __future__ import annotations

from pathlib import Path

import pytest
from rl_prep_helpers import CHAT_TEMPLATE, MARKERS


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
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>",
                                   additional_special_tokens=list(MARKERS))
    fast.chat_template = CHAT_TEMPLATE
    folder = tmp_path_factory.mktemp("char_tokenizer")
    fast.save_pretrained(str(folder))
    return folder
