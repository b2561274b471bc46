"""Run folders the workflow tests share, because whole tiny runs are what makes the suite slow.

``prepared`` is one small tiny run (tests.conftest.SMALL_TINY) made once per session through the real CLI and
Snakemake up to rl_prep: tiny data, a 10-step SFT policy, its checkpoint_megatron and rl_prep. Stage-level tests run
``python -m rlvr.stages rlvr`` on it (``rlvr_command``), as the rule's shell command does; CLI-level tests copy its
folders into their own run folder (``copy_prepared``), so that Snakemake starts at reward_preflight.
``whole_small_run`` is one whole small run of every rule, for the tests that check what each stage was given.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr.config import load_step_config
from rlvr.stages.stage_config import stage_config_path, write_stage_configs
from rlvr.steps.index import resolve_step
from tests.conftest import SMALL_TINY, nemotron_env
from tests.parallel import built_once

STEP = "rl/nemo_rl/rlvr"
PREPARED_STAGES = ("tiny_data", "tiny_sft", "hf_to_megatron", "rl_prep")
# The GRPO run of the stage-level tests: 6 steps, a checkpoint every 2. The 10-step SFT policy never answers
# correctly, so the DAPO overlong penalty (grpo.reward_shaping) supplies the reward spread: without it every advantage
# is 0, the weights never move and "resumed weights equal uninterrupted weights" would hold trivially.
STAGE_RUN = [
    "grpo.max_num_steps=6",
    "checkpointing.save_period=2",
    "grpo.val_period=0",
    "grpo.val_at_start=true",
    "grpo.val_at_end=false",
    "grpo.max_val_samples=32",
    "grpo.val_batch_size=32",
    "policy.optimizer.kwargs.lr=0.0002",
    "logger.tensorboard_enabled=false",
    "grpo.reward_shaping.enabled=true",
    "grpo.reward_shaping.max_response_length=8",
    "grpo.reward_shaping.overlong_buffer_length=6",
    "grpo.reward_shaping.overlong_buffer_penalty=1.0",
]
# The secret of whole_small_run, and what records every Python process's argv there (the `ps` view).
SECRET = "s3cr3t-Value-5e1d"
ARGV_SPY = """import os
_dir = os.environ.get("RLVR_TEST_ARGV_DIR")
if _dir:  # what `ps` shows for this process
    with open("/proc/self/cmdline", "rb") as src, open(os.path.join(_dir, f"{os.getpid()}.argv"), "wb") as dst:
        dst.write(src.read())
"""
CHAT_TEMPLATE = "{% for m in messages %}Q:{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}A:{% endif %}"


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """``results/tiny`` with rl_prep/ and hf_to_megatron/checkpoint_megatron, made by the CLI and Snakemake."""
    run = built_once(tmp_path_factory, "tiny_run", prepare) / "results" / "tiny"
    assert (run / "rl_prep" / "train.jsonl").exists() and (run / "hf_to_megatron" / "checkpoint_megatron").is_dir()
    assert not (run / "rlvr").exists()
    return run


def prepare(root: Path) -> None:
    """The CLI's small tiny run up to rl_prep, in the working folder ``root``."""
    proc = subprocess.run(
        [sys.executable, "-m", "rlvr.cli.main", "steps", "run", STEP, "-c", "tiny", *SMALL_TINY, "--until", "rl_prep"],
        cwd=root,
        env=nemotron_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def copy_prepared(prepared: Path, run_dir: Path, stages: tuple[str, ...] = PREPARED_STAGES) -> None:
    """The prepared rules' outputs into ``run_dir``. copytree keeps modification times, and a fresh working folder has
    no Snakemake metadata to compare params with, so Snakemake finds them up to date and starts after them."""
    for name in stages:
        shutil.copytree(prepared / name, run_dir / name)


def rlvr_command(prepared: Path, run_dir: Path, *overrides: str) -> list[str]:
    """The rule's command line: its stage config file (written as the Snakefile writes it) and explicit paths."""
    cfg = load_step_config(resolve_step(STEP), "tiny", [*SMALL_TINY, *STAGE_RUN, *overrides]).engine_view()
    write_stage_configs(run_dir, {"rlvr": cfg})
    return [
        sys.executable,
        "-m",
        "rlvr.stages",
        "rlvr",
        "--config",
        str(stage_config_path(run_dir, "rlvr")),
        "--data",
        str(prepared / "rl_prep"),
        "--policy",
        str(prepared / "hf_to_megatron" / "checkpoint_megatron"),
        "--base-model",
        str(prepared / "tiny_sft" / "policy"),
        *rlvr_outputs(run_dir),
    ]


def rlvr_outputs(run_dir: Path) -> list[str]:
    """The rule's output paths (rules/rlvr.smk) under ``run_dir``; the adapter folder is written by LoRA runs only."""
    out = run_dir / "rlvr"
    paths = {"ckpt": "checkpoint_megatron", "summary": "summary.json", "metrics": "metrics.jsonl"}
    paths["lora-adapter"] = "lora_adapter"
    return [*(a for flag, name in paths.items() for a in (f"--{flag}", str(out / name))), "--work-dir", str(out)]


def run_stage(command: list[str]) -> str:
    proc = subprocess.run(command, env=nemotron_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def metric_rows(run_dir: Path) -> list[dict]:
    """The rlvr stage's ``metrics.jsonl`` of ``run_dir``, one dict per line."""
    return [json.loads(line) for line in (run_dir / "rlvr" / "metrics.jsonl").read_text().splitlines()]


def metric_steps(run_dir: Path) -> list[int]:
    return [row["step"] for row in metric_rows(run_dir)]


def run_whole_tiny(cwd: Path, *args: str) -> str:
    """``nemotron steps run rl/nemo_rl/rlvr -c tiny *args`` from ``cwd`` (a learning test's whole run, untimed);
    returns its stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", "rlvr.cli.main", "steps", "run", STEP, "-c", "tiny", *args],
        cwd=cwd,
        env=nemotron_env(),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout


@pytest.fixture(scope="session")
def whole_small_run(tmp_path_factory) -> dict:
    """Every rule of a small tiny run, from nothing, with two GRPO steps: a secret in ``logger.wandb.name`` (from
    ``$MY_API_KEY``), a ``.jinja`` chat template (``policy.tokenizer.chat_template``) and the argv spy on the
    ``PYTHONPATH``. Returns the working folder, its run folder, the CLI's result, the argv folder, and the
    overrides and environment the run was made with (a later Snakemake call on it must see the same config)."""
    root = tmp_path_factory.mktemp("whole_run")
    work, spy, argv_dir = root / "work", root / "spy", root / "argv"
    for folder in (work, spy, argv_dir):
        folder.mkdir()
    (spy / "sitecustomize.py").write_text(ARGV_SPY)
    (work / "plain.jinja").write_text(CHAT_TEMPLATE)
    env = nemotron_env()
    env.update(MY_API_KEY=SECRET, RLVR_TEST_ARGV_DIR=str(argv_dir), PYTHONPATH=f"{spy}:{env['PYTHONPATH']}")
    overrides = [
        *SMALL_TINY,
        # Two steps, validated before and after on 8 prompts: the report test needs curves and a validation table.
        "grpo.max_num_steps=2",
        "grpo.val_at_start=true",
        "grpo.val_at_end=true",
        "grpo.val_period=0",
        "grpo.max_val_samples=8",
        "grpo.val_batch_size=8",
        "grpo.val_num_generations_per_prompt=1",
        "logger.tensorboard_enabled=false",
        "logger.wandb.name=team-${oc.env:MY_API_KEY}",
        "policy.tokenizer.chat_template=plain.jinja",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "rlvr.cli.main", "steps", "run", STEP, "-c", "tiny", *overrides, "--cores", "2"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {
        "work": work,
        "run": work / "results" / "tiny",
        "proc": proc,
        "argv": argv_dir,
        "overrides": overrides,
        "env": env,
    }
