"""An unsupported policy architecture is refused at config-check time (``-d``) with the supported list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from convert_fixtures import make_hf_model

from rlvr.config import load_step_config
from rlvr.errors import ConfigError
from rlvr.steps.index import resolve_step
from tests.conftest import nemotron_env

RLVR = resolve_step("rl/nemo_rl/rlvr")
DATA = ["data.train.data_path=/data/train.jsonl", "data.validation.data_path=/data/val.jsonl"]


def _folder(tmp_path: Path, config: dict) -> Path:
    folder = tmp_path / "policy"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("step", "config", "key"),
    [("convert/hf_to_megatron", None, "hf_model_id"), ("rl/nemo_rl/rlvr", "default", "policy.model_name")],
)
def test_unsupported_architecture_is_a_config_error(tmp_path: Path, step: str, config: str | None, key: str) -> None:
    """The error names the key, the config.json and every supported architecture."""
    folder = _folder(tmp_path, {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    extra = DATA if step == "rl/nemo_rl/rlvr" else []
    with pytest.raises(ConfigError) as err:
        load_step_config(resolve_step(step), config, [f"{key}={folder}", *extra])
    message = str(err.value)
    assert f"{key}={folder}" in message and "GPT2LMHeadModel" in message and str(folder / "config.json") in message
    for arch in ("Qwen3ForCausalLM", "MistralForCausalLM", "Phi3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM"):
        assert arch in message


def test_supported_folders_and_non_folders_pass(tmp_path: Path) -> None:
    """A real Qwen3 folder passes; a hub id or a path without config.json is left to the step that reads it."""
    model = make_hf_model("qwen3", tied=True, kv_heads=2)
    model.save_pretrained(tmp_path / "qwen3")
    step = resolve_step("convert/hf_to_megatron")
    for source in (tmp_path / "qwen3", "Qwen/Qwen3-0.6B", tmp_path / "absent"):
        load_step_config(step, None, [f"hf_model_id={source}"])


def test_rlvr_refuses_a_policy_the_megatron_builder_cannot_compute(tmp_path: Path) -> None:
    """A Gemma 3 with attn_logit_softcapping set converts (hf_to_megatron passes) but cannot be trained as
    transformers computes it, so the rlvr step refuses it at -d, naming the key."""
    config = make_hf_model("gemma3", tied=True, kv_heads=2, head_dim=16, attn_logit_softcapping=50.0).config
    config.save_pretrained(tmp_path / "gemma3")
    load_step_config(resolve_step("convert/hf_to_megatron"), None, [f"hf_model_id={tmp_path / 'gemma3'}"])
    with pytest.raises(ConfigError, match=r"policy.model_name=.*attn_logit_softcapping=50.0 is ignored by"):
        load_step_config(RLVR, "default", [f"policy.model_name={tmp_path / 'gemma3'}", *DATA])
    config.attn_logit_softcapping = None
    config.save_pretrained(tmp_path / "gemma3")
    load_step_config(RLVR, "default", [f"policy.model_name={tmp_path / 'gemma3'}", *DATA])


def test_broken_config_json_is_a_config_error(tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config.json: not valid JSON"):
        load_step_config(resolve_step("convert/hf_to_megatron"), None, [f"hf_model_id={folder}"])


def test_dry_run_exits_non_zero_without_traceback(tmp_path: Path, isolated_cwd: Path) -> None:
    """The user's command: ``steps run convert/hf_to_megatron -d`` on a GPT-2 folder."""
    folder = _folder(tmp_path, {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"})
    proc = subprocess.run(
        [sys.executable, "-m", "rlvr.cli.main", "steps", "run", "convert/hf_to_megatron", "-d",
         f"hf_model_id={folder}"],
        cwd=isolated_cwd, env=nemotron_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "unsupported model architecture" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
