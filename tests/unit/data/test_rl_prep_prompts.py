"""rl_prep with users' tokenizers and third-party rows: chat_template (default / file / literal) on a template-less
base model, prompt_file alone, rows with a system turn, numeric answers, reasoning-gym and HumanEval shaped rows,
and train / validation overlap (refused for the same file, reported otherwise)."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from rl_prep_helpers import QWEN_TEMPLATE, read_jsonl, write_jsonl

from rlvr.data.chat_template import PLAIN_CHAT_TEMPLATE
from rlvr.data.prep import prepare_rl_data
from rlvr.data.rows import iter_rows
from rlvr.errors import ConfigError

TEMPLATE_KEY = "policy.tokenizer.chat_template"


def run(tmp_path, data, *, tokenizer=None, out="out", **kw):
    card = prepare_rl_data(
        data, out_dir=tmp_path / out, tokenizer_dir=tokenizer, seed=0, template_key=TEMPLATE_KEY, **kw
    )
    return card, read_jsonl(tmp_path / out / "train.jsonl"), read_jsonl(tmp_path / out / "val.jsonl")


def math_file(tmp_path, name="train.jsonl", n=4):
    return write_jsonl(tmp_path / name, [{"problem": f"What is {i}+1?", "expected_answer": i + 1} for i in range(n)])


def test_template_less_base_model_goes_through_with_default(tmp_path, base_tokenizer_dir):
    """chat_template=default on a base tokenizer: plain prompts, and rl_prep/tokenizer/ carries that template."""
    from transformers import AutoTokenizer

    card, train, _ = run(
        tmp_path,
        {"train": {"data_path": str(math_file(tmp_path))}},
        tokenizer=base_tokenizer_dir,
        chat_template="default",
    )
    assert train[0]["prompt"] == "User: What is 0+1?\nAssistant:"
    assert train[0]["ground_truth"] == "1"  # a numeric answer, kept as its string
    written = tmp_path / "out" / "tokenizer"
    assert (written / "chat_template.jinja").read_text() == PLAIN_CHAT_TEMPLATE
    assert json.loads((written / "tokenizer_config.json").read_text())["chat_template"] == PLAIN_CHAT_TEMPLATE
    reloaded = AutoTokenizer.from_pretrained(str(written))
    assert reloaded.chat_template == PLAIN_CHAT_TEMPLATE
    assert (
        reloaded("What is 0+1?")["input_ids"]
        == AutoTokenizer.from_pretrained(str(base_tokenizer_dir))("What is 0+1?")["input_ids"]
    )
    assert card["chat_template"] == {
        "source": "built-in plain template (default)",
        "configured": "default",
        "kwargs": {},
        "written_to": "tokenizer/",
    }
    assert train[0]["prompt_tokens"] == len(reloaded(train[0]["prompt"], add_special_tokens=False)["input_ids"])


def test_template_less_base_model_without_a_fix_names_the_keys(tmp_path, base_tokenizer_dir):
    """No template and no prompt_file: one ConfigError listing exactly the keys that fix it; nothing written."""
    with pytest.raises(ConfigError) as info:
        run(tmp_path, {"train": {"data_path": str(math_file(tmp_path))}}, tokenizer=base_tokenizer_dir)
    message = str(info.value)
    assert "has no chat template, so the prompts of data.train cannot be formatted" in message
    for fix in (
        f"{TEMPLATE_KEY}=default",
        f"{TEMPLATE_KEY}=<a .jinja file or a literal Jinja template>",
        "data.train.prompt_file=<a file with one {} for the problem>",
    ):
        assert fix in message
    assert not (tmp_path / "out").exists()


def test_base_model_with_prompt_file_alone(tmp_path, base_bos_tokenizer_dir):
    """prompt_file on a template-less tokenizer is the whole prompt (after the BOS it adds); nothing re-templated."""
    prompt_file = tmp_path / "base.txt"
    prompt_file.write_text("Question: {}\nAnswer:")
    card, train, _ = run(
        tmp_path,
        {"train": {"data_path": str(math_file(tmp_path)), "prompt_file": str(prompt_file)}},
        tokenizer=base_bos_tokenizer_dir,
    )
    assert train[0]["prompt"] == "<s>Question: What is 0+1?\nAnswer:"
    assert card["chat_template"]["source"] == "none (prompt_file text only)"
    assert not (tmp_path / "out" / "tokenizer").exists()


def test_own_template_is_used_and_a_literal_one_is_written_out(tmp_path, qwen_tokenizer_dir):
    """The Qwen-style tokenizer's own template needs no copy; a literal template is used and written out."""
    data = {"train": {"data_path": str(math_file(tmp_path))}}
    card, train, _ = run(tmp_path, data, tokenizer=qwen_tokenizer_dir, chat_template_kwargs={"enable_thinking": False})
    assert train[0]["prompt"].endswith(
        "<|im_start|>user\nWhat is 0+1?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert card["chat_template"]["source"] == "tokenizer's own" and not (tmp_path / "out" / "tokenizer").exists()
    literal = "{% for m in messages %}{{ m.content }}{% endfor %} =>"
    _, train, _ = run(tmp_path, data, tokenizer=qwen_tokenizer_dir, chat_template=literal, out="lit")
    assert train[0]["prompt"] == "What is 0+1? =>"
    assert (tmp_path / "lit" / "tokenizer" / "chat_template.jinja").read_text() == literal
    assert QWEN_TEMPLATE not in (tmp_path / "lit" / "tokenizer" / "tokenizer_config.json").read_text()


def test_messages_rows_with_a_system_turn(tmp_path, qwen_tokenizer_dir):
    """[system, user, assistant]: the system turn is the row's system prompt; the canonical row stays canonical."""
    rows = [
        {
            "messages": [
                {"role": "system", "content": "Answer with a number only."},
                {"role": "user", "content": "2*3?"},
                {"role": "assistant", "content": "6"},
            ]
        },
        {"messages": [{"role": "user", "content": "2*4?"}, {"role": "assistant", "content": "8"}]},
    ]
    path = write_jsonl(tmp_path / "m.jsonl", rows)
    system_file = tmp_path / "system.txt"
    system_file.write_text("Be brief.")
    _, train, _ = run(
        tmp_path,
        {"train": {"data_path": str(path), "system_prompt_file": str(system_file)}},
        tokenizer=qwen_tokenizer_dir,
    )
    assert train[0]["prompt"].startswith("<|im_start|>system\nAnswer with a number only.<|im_end|>\n")
    assert train[1]["prompt"].startswith("<|im_start|>system\nBe brief.<|im_end|>\n")
    assert "system_prompt" not in train[0] and list(iter_rows(tmp_path / "out" / "train.jsonl"))[0] == train[0]
    with pytest.raises(
        ConfigError,
        match=r"m.jsonl:1: messages\[0\]: a system turn \(1 row\(s\) of data.train "
        r"have one\) needs a chat template to be placed; pass the tokenizer folder",
    ):
        run(tmp_path, {"train": {"data_path": str(path)}}, out="plain")


def test_reasoning_gym_rows_with_numeric_answers(tmp_path):
    """reasoning-gym exports {"question", "answer", "metadata"}; input_key / output_key name them; numbers kept."""
    rows = [
        {"question": "What is 17 * 3?", "answer": 51, "metadata": {"source_dataset": "basic_arithmetic"}},
        {"question": "What is 1 / 8?", "answer": 0.125, "metadata": {}},
        {"question": "How many grams in a kilogram?", "answer": 1e3, "metadata": {}},
        {"question": "Round 4.99 to one digit.", "answer": "5", "metadata": {}},
    ]
    path = write_jsonl(tmp_path / "rg.jsonl", rows)
    _, train, _ = run(tmp_path, {"train": {"data_path": str(path), "input_key": "question", "output_key": "answer"}})
    assert [row["ground_truth"] for row in train] == ["51", "0.125", "1000", "5"]


def test_humaneval_rows(tmp_path):
    """HumanEval-shaped rows (its own 'prompt' column, check(candidate) tests) read with input_key=prompt."""
    row = {
        "task_id": "HumanEval/0",
        "prompt": 'def add(a, b):\n    """Return a + b."""\n',
        "tests": {
            "kind": "python",
            "code": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
            "entry_point": "add",
        },
    }
    path = write_jsonl(tmp_path / "he.jsonl", [row])
    _, train, _ = run(tmp_path, {"train": {"data_path": str(path), "env_name": "code", "input_key": "prompt"}})
    assert train[0]["problem"] == row["prompt"] and train[0]["tests"] == row["tests"]


def test_validation_file_equal_to_training_file_is_refused(tmp_path):
    """The same path, or a byte-identical copy, as validation is a ConfigError naming the keys and the fixes."""
    train = math_file(tmp_path)
    copy = tmp_path / "copy.jsonl"
    shutil.copy(train, copy)
    for validation in (train, copy):
        with pytest.raises(ConfigError) as info:
            run(tmp_path, {"train": {"data_path": str(train)}, "validation": {"data_path": str(validation)}})
        message = str(info.value)
        assert f"data.validation.data_path='{validation}' is the same file as data.train.data_path" in message
        assert "data.allow_overlap: true" in message and "split_validation_size" in message
    assert not (tmp_path / "out").exists()


def test_overlap_is_counted_in_the_card_and_logged(tmp_path, caplog):
    """allow_overlap: the same file passes with its overlap counted; distinct files sharing prompts are reported."""
    train = math_file(tmp_path, n=4)
    with caplog.at_level(logging.WARNING, logger="rlvr.data"):
        card, _, val = run(
            tmp_path,
            {"train": {"data_path": str(train)}, "validation": {"data_path": str(train)}, "allow_overlap": True},
        )
    assert len(val) == 4
    assert card["overlap"] == {
        "validation_prompts_in_train": 4,
        "validation_rows": 4,
        "fraction": 1.0,
        "same_files": [{"validation": "data.validation", "train": "data.train"}],
        "allow_overlap": True,
    }
    assert "4 of the 4 validation prompts also appear in the training set" in caplog.text
    caplog.clear()
    val_path = write_jsonl(
        tmp_path / "val.jsonl",
        [{"problem": "What is 1+1?", "expected_answer": "2"}, {"problem": "What is 9+1?", "expected_answer": "10"}],
    )
    with caplog.at_level(logging.WARNING, logger="rlvr.data"):
        card, _, _ = run(
            tmp_path, {"train": {"data_path": str(train)}, "validation": {"data_path": str(val_path)}}, out="partial"
        )
    assert (card["overlap"]["validation_prompts_in_train"], card["overlap"]["same_files"]) == (1, [])
    assert "1 of the 2 validation prompts" in caplog.text
    caplog.clear()
    card, _, _ = run(tmp_path, {"train": {"data_path": str(train), "split_validation_size": 2}}, out="split")
    assert card["overlap"]["validation_prompts_in_train"] == 0 and caplog.text == ""


def test_grpo_loads_rl_preps_tokenizer_only_when_rl_prep_wrote_one(tmp_path):
    """with_prepared_tokenizer points policy.tokenizer.name at rl_prep/tokenizer/ when present, else leaves cfg."""
    from rlvr.data.chat_template import with_prepared_tokenizer

    cfg = {"policy": {"tokenizer": {"name": None, "chat_template": "default"}, "precision": "float32"}, "grpo": {}}
    assert with_prepared_tokenizer(cfg, tmp_path) is cfg
    (tmp_path / "tokenizer").mkdir()
    updated = with_prepared_tokenizer(cfg, tmp_path)
    assert updated["policy"]["tokenizer"] == {"name": str(tmp_path / "tokenizer"), "chat_template": "default"}
    assert cfg["policy"]["tokenizer"]["name"] is None  # the run's own config (and fingerprint) is untouched
