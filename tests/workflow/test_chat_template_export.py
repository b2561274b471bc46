"""policy.tokenizer.chat_template end to end: a .jinja template formats rl_prep's prompts, GRPO trains on them
and the exported HF folder carries that template (not the tokenizer's own), through the real CLI and Snakemake.

The run is the session's whole small tiny run (tests/workflow/conftest.py, ``whole_small_run``: a 10-step SFT
policy, two GRPO steps, ``policy.tokenizer.chat_template=plain.jinja``), shared with the secrets and report tests.
"""

from __future__ import annotations

import json

import pytest

from tests.workflow.conftest import CHAT_TEMPLATE

pytestmark = pytest.mark.slow


def test_a_jinja_chat_template_reaches_the_prompts_and_the_export(whole_small_run):
    run = whole_small_run["run"]
    first = json.loads((run / "rl_prep" / "train.jsonl").read_text().splitlines()[0])
    assert first["prompt"] == f"Q:{first['problem']}\nA:"  # the tiny tokenizer's own template starts with <bos>
    card = json.loads((run / "rl_prep" / "data_card.json").read_text())
    assert card["chat_template"]["source"] == "configured"
    for folder in (run / "rl_prep" / "tokenizer", run / "megatron_to_hf" / "hf"):
        assert (folder / "chat_template.jinja").read_text() == CHAT_TEMPLATE
        assert (
            json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template", CHAT_TEMPLATE)
            == CHAT_TEMPLATE
        )
