"""The memory estimate printed at -d, and the refusal of a plan that cannot fit."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlvr.config.loader import complete_config
from rlvr.config.memory import GIB, ModelShape, check_fits, estimate, memory_plan
from rlvr.errors import ConfigError
from tests.conftest import nemotron_env

LLAMA_32_1B = {
    "architectures": ["LlamaForCausalLM"],
    "vocab_size": 128256,
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "tie_word_embeddings": True,
}


def config(**policy) -> dict:
    """A schema-completed config (as the loader hands the estimate) with small shapes."""
    partial = {
        "grpo": {"num_prompts_per_step": 4, "num_generations_per_prompt": 2},
        "loss_fn": {"reference_policy_kl_penalty": 0.0},
        "cluster": {"gpus_per_node": 0},
        "policy": {
            "precision": "float32",
            "max_total_sequence_length": 10,
            "generation_batch_size": 4,
            "train_micro_batch_size": 2,
            "logprob_chunk_size": None,
            "dtensor_cfg": {},
            **policy,
        },
    }
    return complete_config(partial)


def test_parameter_count_matches_llama_3_2_1b():
    assert ModelShape.from_hf_config(LLAMA_32_1B).parameters == 1_235_814_400  # the published count


def test_each_term_by_hand():
    shape = ModelShape(
        vocab_size=100,
        hidden_size=8,
        intermediate_size=16,
        num_layers=2,
        num_heads=2,
        num_kv_heads=1,
        head_dim=4,
        tied=False,
    )
    # per layer: attention 8*4*(2*2+2*1)=192, mlp 3*8*16=384, norms 16 -> 592; x2 = 1184; embeddings 2*800; final 8
    assert shape.parameters == 1184 + 1600 + 8
    est = estimate(config(), shape)
    assert est.weights_and_optimizer == 16 * 2792
    assert est.generation_kv_cache == 4 * 10 * 2 * 2 * 1 * 4 * 4  # rows x tokens x (k,v) x layers x kv x hd x fp32
    assert est.logits == 3 * 2 * 10 * 100 * 4
    assert est.activations == 2 * 10 * 8 * 2 * 16 * 4
    bf16 = estimate(config(precision="bfloat16"), shape)
    assert bf16.weights_and_optimizer == 16 * 2792 + 2 * 2792  # + the 16-bit compute copy
    assert bf16.generation_kv_cache == est.generation_kv_cache // 2
    chunked = estimate(config(logprob_chunk_size=5, dtensor_cfg={"activation_checkpointing": True}), shape)
    assert chunked.logits == est.logits // 2 and chunked.activations == est.activations // 16


def test_a_batch_that_cannot_fit_is_refused_naming_the_keys(tmp_path):
    policy = tmp_path / "my-llama"
    policy.mkdir()
    (policy / "config.json").write_text(json.dumps(LLAMA_32_1B))
    cfg = config(model_name=str(policy), max_total_sequence_length=4096, generation_batch_size=100_000)
    cfg["grpo"]["num_generations_per_prompt"] = 50_000
    with pytest.raises(ConfigError) as err:
        memory_plan(cfg)
    text = str(err.value)
    assert "memory_estimate_exceeds_device" in text and "generation KV cache" in text
    assert "policy.generation_batch_size" in text and "grpo.num_generations_per_prompt" in text
    # Not run here (a cluster profile): the estimate is printed, nothing refused.
    lines = memory_plan(cfg, local=False)
    assert any(line.startswith("  total:") for line in lines) and "1235.8M parameters" in lines[0]


def test_fits_when_unknown_or_small():
    shape = ModelShape.from_hf_config(LLAMA_32_1B)
    est = estimate(config(), shape)
    assert check_fits(est, None) is None
    assert check_fits(est, (64 * GIB, "RAM")) is None
    assert "lower one of" in check_fits(est, (1 * GIB, "RAM"))


def test_dry_run_prints_the_estimate_and_refuses_a_huge_rollout(tmp_path):
    base = [sys.executable, "-m", "rlvr.cli.main", "steps", "run", "rl/nemo_rl/rlvr", "-c", "tiny", "-d"]
    ok = subprocess.run(base, cwd=tmp_path, env=nemotron_env(), capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "memory (estimate per training process)" in ok.stdout and "  total:" in ok.stdout
    huge = subprocess.run(
        [
            *base,
            "grpo.num_generations_per_prompt=100000",
            "policy.generation_batch_size=1600000",
            "policy.train_global_batch_size=1600000",
        ],
        cwd=tmp_path,
        env=nemotron_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert huge.returncode != 0 and "Traceback" not in huge.stderr
    assert "memory_estimate_exceeds_device" in huge.stderr and "grpo.num_generations_per_prompt" in huge.stderr
    assert not (tmp_path / "results").exists()
