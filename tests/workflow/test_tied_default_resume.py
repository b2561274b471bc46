"""A user's tied, bf16 Qwen2-style model through ``nemotron steps run rl/nemo_rl/rlvr -c default`` on the CPU:
killed (kill -9 of the whole process group) after the first step checkpoint, resumed by re-running the same
command, exported. Before the fix the first checkpoint crashed (safetensors: "Some tensors share memory") and
the export came out in the training precision (float32) instead of the model's bf16.

``-c default`` is overridden to CPU sizes (hf generation backend, no GPUs, 4 prompts x 4 samples, 6 steps). A
random model never answers right, so the DAPO overlong penalty with a stop string gives the reward spread that
makes the weights move. About 3 minutes on two busy cores (most of it process start-up and conversions).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.conftest import nemotron_env
from tests.tied_user_model import save_tied_user_model

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CPU_SIZES = [
    "cluster.gpus_per_node=0",
    "run.env.gpus_per_node=0",
    "policy.generation.backend=hf",
    "policy.precision=float32",
    "policy.max_total_sequence_length=64",
    "policy.make_sequence_length_divisible_by=1",
    "policy.train_global_batch_size=16",
    "policy.train_micro_batch_size=8",
    "policy.generation_batch_size=16",
    "policy.logprob_batch_size=16",
    "policy.generation.max_new_tokens=8",
    'policy.generation.stop_strings=[" "]',
    "policy.optimizer.kwargs.lr=0.001",
    "grpo.num_prompts_per_step=4",
    "grpo.num_generations_per_prompt=4",
    "grpo.max_num_steps=6",
    "grpo.val_period=0",
    "grpo.val_at_start=false",
    "grpo.val_at_end=false",
    "grpo.max_val_samples=8",
    "grpo.val_batch_size=8",
    "grpo.reward_shaping.enabled=true",
    "grpo.reward_shaping.max_response_length=8",
    "grpo.reward_shaping.overlong_buffer_length=6",
    "env.math.num_workers=1",
    "env.code.num_workers=1",
    "checkpointing.save_period=2",
    "checkpointing.metric_name=null",
    "logger.tensorboard_enabled=false",
    "logger.monitor_gpus=false",
]
EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"


def write_inputs(root: Path) -> list[str]:
    """The user's model folder and 40 distinct arithmetic problems (32 train, 8 validation)."""
    save_tied_user_model(root / "user_model")
    problems = [(a, b) for a in range(1, 9) for b in range(10, 15)]
    for name, rows in (("train", problems[:32]), ("val", problems[32:])):
        (root / f"{name}.jsonl").write_text(
            "".join(
                json.dumps({"problem": f"What is {a} + {b}?", "expected_answer": str(a + b)}) + "\n" for a, b in rows
            )
        )
    return [
        f"policy.model_name={root / 'user_model'}",
        f"data.train.data_path={root / 'train.jsonl'}",
        f"data.validation.data_path={root / 'val.jsonl'}",
    ]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rlvr.cli.main", "steps", "run", "rl/nemo_rl/rlvr", "-c", "default", *args]


def env() -> dict:
    return {**nemotron_env(), "OMP_NUM_THREADS": "1"}


def run_until(command: list[str], cwd: Path, done: Path, log: Path) -> None:
    """Start the CLI in its own process group; SIGKILL the group (Snakemake, the stage, its workers) once
    ``done`` exists, as a node failure would."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, cwd=cwd, env=env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 400
            while time.monotonic() < deadline and proc.poll() is None and not done.exists():
                time.sleep(0.02)
            assert proc.poll() is None, f"the run ended before {done} appeared:\n{log.read_text()[-3000:]}"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def run(command: list[str], cwd: Path) -> str:
    proc = subprocess.run(command, cwd=cwd, env=env(), capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def test_tied_bf16_model_checkpoints_resumes_and_exports_tied_bf16(tmp_path):
    args = [*write_inputs(tmp_path), *CPU_SIZES]
    run_dir = tmp_path / "results" / "default"
    ckpts = run_dir / "rlvr" / "ckpts"
    run_until(cli(*args, "--cores", "2"), tmp_path, ckpts / "step_2", tmp_path / "killed.log")
    assert (ckpts / "step_2").is_dir() and not (run_dir / "rlvr" / "summary.json").exists()
    with safe_open(str(ckpts / "step_2" / "policy" / "model.safetensors"), "pt") as fh:
        assert {EMBED} <= set(fh.keys()) and HEAD not in set(fh.keys())  # the tie is stored once

    # Snakemake's lock survives a kill -9; --unlock (passed through) is its documented remedy.
    run(cli(*args, "--unlock"), tmp_path)
    run(cli(*args, "--cores", "2"), tmp_path)
    rlvr_log = (run_dir / "logs" / "rlvr.log").read_text()
    assert "[resume] resuming from" in rlvr_log and "ckpts/step_2 (step 2" in rlvr_log
    steps = [json.loads(line)["step"] for line in (run_dir / "rlvr" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]

    run_config = (run_dir / "rlvr" / "checkpoint_megatron" / "iter_0000006" / "run_config.yaml").read_text()
    assert "source_dtype: bfloat16" in run_config and "params_dtype: float32" in run_config
    assert_export_is_the_trained_tied_bf16_model(
        run_dir / "megatron_to_hf" / "hf", ckpts / "step_6", tmp_path / "user_model"
    )


def assert_export_is_the_trained_tied_bf16_model(export: Path, last_step: Path, user_model: Path) -> None:
    """bf16 as the user's model, tied on reload, and equal to the final step's weights cast once."""
    from transformers import AutoModelForCausalLM

    config = json.loads((export / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and config["tie_word_embeddings"] is True
    model = AutoModelForCausalLM.from_pretrained(export)
    assert model.dtype == torch.bfloat16
    assert model.lm_head.weight is model.model.embed_tokens.weight
    trained = load_file(str(last_step / "policy" / "model.safetensors"))
    assert trained[EMBED].dtype == torch.float32  # trained in policy.precision float32
    for name, tensor in model.state_dict().items():
        if name != HEAD:
            assert torch.equal(tensor, trained[name].to(torch.bfloat16)), name
    user = load_file(str(user_model / "model.safetensors"))
    moved = (model.model.embed_tokens.weight.float() - user[EMBED].float()).abs().max()
    assert moved > 1e-3, "training did not move the tied embedding"
