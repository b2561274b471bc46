"""policy.tokenizer.chat_template end to end: a .jinja template formats rl_prep's prompts, GRPO trains on them
and the exported HF folder carries that template (not the tokenizer's own), through the real CLI and Snakemake.

A tiny run cut to the bone (a 10-step SFT policy, 64 prompts, one GRPO step, no validation): about 3.5 minutes
on two busy cores, most of it process start-up.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import nemotron_env

pytestmark = pytest.mark.slow

TEMPLATE = "{% for m in messages %}Q:{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}A:{% endif %}"
SMALL = [
    "tiny.sft.steps=10",
    "tiny.sft.warmup_steps=2",
    "tiny.model.hidden_size=64",
    "tiny.model.intermediate_size=192",
    "tiny.model.num_hidden_layers=2",
    "tiny.data.sft.train_size=1000",
    "tiny.data.sft.val_size=32",
    "tiny.data.rl.train_size=64",
    "tiny.data.rl.val_size=16",
    "grpo.max_num_steps=1",
    "grpo.val_at_start=false",
    "grpo.val_at_end=false",
    "grpo.val_period=0",
    "grpo.max_val_samples=16",
    "grpo.val_batch_size=16",
    "logger.tensorboard_enabled=false",
]


def test_a_jinja_chat_template_reaches_the_prompts_and_the_export(tmp_path):
    (tmp_path / "plain.jinja").write_text(TEMPLATE)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlvr.cli.main",
            "steps",
            "run",
            "rl/nemo_rl/rlvr",
            "-c",
            "tiny",
            *SMALL,
            "policy.tokenizer.chat_template=plain.jinja",
            "--cores",
            "2",
        ],
        cwd=tmp_path,
        env=nemotron_env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "results" / "tiny"
    first = json.loads((run / "rl_prep" / "train.jsonl").read_text().splitlines()[0])
    assert first["prompt"] == f"Q:{first['problem']}\nA:"  # the tiny tokenizer's own template starts with <bos>
    card = json.loads((run / "rl_prep" / "data_card.json").read_text())
    assert card["chat_template"]["source"] == "configured"
    for folder in (run / "rl_prep" / "tokenizer", run / "megatron_to_hf" / "hf"):
        assert (folder / "chat_template.jinja").read_text() == TEMPLATE
        assert json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template", TEMPLATE) == TEMPLATE
