"""Tests of rlvr.tiny.tokenizer: a character-level HF tokenizer with a short chat template."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from rlvr.tiny.tokenizer import BASE_CHARS, CHAT_TEMPLATE, build_char_tokenizer, char_vocabulary


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tokenizer built with two extra characters, and its reload through AutoTokenizer."""
    folder = tmp_path_factory.mktemp("tok")
    built = build_char_tokenizer(folder, extra_chars="xy+")
    return folder, built, AutoTokenizer.from_pretrained(folder)


def test_vocabulary_order_and_special_ids(saved):
    """Ids: <pad>=0, <unk>=1, <bos>=2, <eos>=3, then BASE_CHARS, then new extra characters (duplicates dropped)."""
    _, _, tok = saved
    vocab = char_vocabulary("xy+")
    assert vocab[:4] == ["<pad>", "<unk>", "<bos>", "<eos>"]
    assert vocab[4:] == list(BASE_CHARS) + ["x", "y"]
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2, 3)
    assert len(tok) == len(vocab) == 4 + len(BASE_CHARS) + 2
    assert tok.convert_ids_to_tokens(list(range(len(vocab)))) == vocab


def test_one_token_per_character_and_round_trip(saved):
    """Every character (newline and space included) is one token; decode gives the text back unchanged."""
    _, _, tok = saved
    text = "Q:12 + 3*x\nA:-7"
    ids = tok(text)["input_ids"]
    assert ids == [char_vocabulary("xy+").index(c) for c in text]
    assert tok.decode(ids) == text


def test_unknown_character_is_unk(saved):
    """A character outside the vocabulary encodes to <unk> and is dropped when special tokens are skipped."""
    _, _, tok = saved
    assert tok("1z2")["input_ids"] == [tok.convert_tokens_to_ids("1"), 1, tok.convert_tokens_to_ids("2")]
    assert tok.decode(tok("1z2")["input_ids"], skip_special_tokens=True) == "12"


def test_chat_template_prompt_and_conversation(saved):
    """The RL prompt is '<bos>Q:{problem}\\nA:'; prompt + answer + <eos> is the templated conversation, id for id."""
    _, built, tok = saved
    user = [{"role": "user", "content": "23+45"}]
    prompt = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert prompt == "<bos>Q:23+45\nA:"
    ids = tok(prompt)["input_ids"]
    assert ids == tok(prompt, add_special_tokens=False)["input_ids"]  # the template alone writes BOS
    assert ids[0] == tok.bos_token_id and len(ids) == 1 + len("Q:23+45\nA:")
    full = tok.apply_chat_template(user + [{"role": "assistant", "content": "68"}], tokenize=False)
    assert full == "<bos>Q:23+45\nA:68<eos>"
    assert tok(full)["input_ids"] == ids + tok("68")["input_ids"] + [tok.eos_token_id]
    assert built.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == prompt
    with pytest.raises(Exception, match="roles system, user and assistant"):
        tok.apply_chat_template([{"role": "tool", "content": "1"}], tokenize=False)


def test_saved_files_are_portable(saved):
    """tokenizer_config.json names a class transformers 4.x knows and carries the chat template itself."""
    folder, _, _ = saved
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["chat_template"] == CHAT_TEMPLATE
    special = json.loads((folder / "special_tokens_map.json").read_text())
    assert special == {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"}
    assert (folder / "tokenizer.json").is_file()
