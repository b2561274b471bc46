"""The rl_prep stage command (what the Snakemake rule runs): the chat template settings reach the engine, and a
template-less tokenizer without a fix is one error line naming the rlvr keys, exit 2, no output."""

from __future__ import annotations

import json

from rl_prep_helpers import write_jsonl

from rlvr.stages.__main__ import main
from rlvr.stages.stage_config import write_stage_configs


def stage(tmp_path, tokenizer, template: dict, out="rl_prep") -> int:
    train = write_jsonl(tmp_path / "train.jsonl", [{"question": "What is 2+2?", "answer": 4}])
    cfg = {
        "data": {"train": {"data_path": str(train), "input_key": "question", "output_key": "answer"}},
        "seed": 3,
        "tokenizer": str(tokenizer),
        "template": template,
    }
    (config,) = write_stage_configs(tmp_path / "run", {"rl_prep": cfg})  # what the workflow writes at its start
    return main(["rl_prep", "--config", str(config), "--out", str(tmp_path / out)])


def test_policy_tokenizer_chat_template_default_runs_a_base_model_through(tmp_path, base_tokenizer_dir, capsys):
    template = {"chat_template": "default", "chat_template_kwargs": None, "key": "policy.tokenizer.chat_template"}
    assert stage(tmp_path, base_tokenizer_dir, template) == 0
    row = json.loads((tmp_path / "rl_prep" / "train.jsonl").read_text())
    assert (row["prompt"], row["ground_truth"]) == ("User: What is 2+2?\nAssistant:", "4")
    assert (tmp_path / "rl_prep" / "tokenizer" / "chat_template.jinja").is_file()
    card_text, overlap_line = capsys.readouterr().out.rsplit("\n", 2)[:2]
    assert json.loads(card_text)["chat_template"]["source"] == "built-in plain template (default)"
    assert overlap_line == "train/validation overlap: 0 of 0 validation prompts are also training prompts"


def test_no_template_is_one_error_naming_the_keys(tmp_path, base_tokenizer_dir, capsys):
    template = {"chat_template": None, "chat_template_kwargs": None, "key": "policy.tokenizer.chat_template"}
    assert stage(tmp_path, base_tokenizer_dir, template) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the tokenizer in") and "Traceback" not in err and len(err.splitlines()) == 1
    assert "policy.tokenizer.chat_template=default" in err and "data.train.prompt_file=" in err
    assert not (tmp_path / "rl_prep").exists()
