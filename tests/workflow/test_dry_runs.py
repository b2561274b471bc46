"""`nemotron steps ...` and `snakemake -n` from the outside: plans, manifests, and bad configs in dry-run mode.

Dry runs must print the compiled config and the plan in seconds, exit 0 and write nothing under results/.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, nemotron_env

NEMOTRON = [sys.executable, "-m", "rlvr.cli.main"]


def nemotron(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*NEMOTRON, *args], cwd=cwd, env=nemotron_env(), capture_output=True, text=True, timeout=120)


def data_files(tmp_path: Path) -> list[str]:
    for name in ("train", "val"):
        (tmp_path / f"{name}.jsonl").write_text('{"problem": "1+1", "expected_answer": "2"}\n')
    return [f"data.train.data_path={tmp_path / 'train.jsonl'}", f"data.validation.data_path={tmp_path / 'val.jsonl'}"]


@pytest.mark.parametrize("config", ["tiny", "default", "cpu", "nemo_gym"])
def test_dry_run_prints_config_and_plan_and_writes_nothing(config, tmp_path):
    extra = [] if config == "tiny" else data_files(tmp_path)
    if config in ("default", "cpu"):
        model = tmp_path / "model"
        model.mkdir()
        extra.append(f"policy.model_name={model}")
    proc = nemotron("steps", "run", "rl/nemo_rl/rlvr", "-c", config, "--dry-run", *extra, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "Compiled Configuration" in out and "num_generations_per_prompt" in out
    assert "rlvr: Missing output files" in out and "rl_prep:" in out and "megatron_to_hf:" in out
    assert ("tiny_sft:" in out) == (config == "tiny")
    assert not (tmp_path / "results").exists()


def test_dry_run_with_a_checkpoint_megatron_policy_skips_conversion(tmp_path):
    """A policy that already is a checkpoint_megatron goes straight to rlvr (no hf_to_megatron)."""
    ckpt = tmp_path / "sft_ckpt"
    ckpt.mkdir()
    (ckpt / "latest_checkpointed_iteration.txt").write_text("0")
    proc = nemotron(
        "steps", "run", "rlvr", "-c", "default", "-d", f"policy.model_name={ckpt}", *data_files(tmp_path), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "hf_to_megatron:" not in proc.stdout and "rlvr:" in proc.stdout


@pytest.mark.parametrize(
    "args,message",
    [
        (["-c", "tiny", "grpo.num_prompts_per_step=7"], "rollout_batch_not_divisible"),
        (["-c", "tiny", "grpo.num_generation_per_prompt=4"], "did you mean 'grpo.num_generations_per_prompt'"),
        (["-c", "tiny", "grpo.max_val_samples=10"], "no validation batch would run"),
        (
            ["-c", "nemo_gym", "data.train.data_path=/x", "data.validation.data_path=/y", "data.default.env_name=math"],
            "mixed_nemo_gym_and_upstream_config",
        ),
        (["-c", "nope"], "Config 'nope' not found"),
        (["-c", "tiny", "-r", "local", "-b", "local"], "exclude each other"),
        (["-c", "tiny", "-r", "no_such_profile"], "Profile 'no_such_profile' not found"),
    ],
)
def test_bad_configs_fail_before_compute(args, message, tmp_path):
    """Each bad input: exit 1, one message (no traceback), nothing written."""
    proc = nemotron("steps", "run", "rl/nemo_rl/rlvr", *args, "--dry-run", cwd=tmp_path)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_unknown_step_suggests(tmp_path):
    proc = nemotron("steps", "run", "rl/nemo_rl/rlv", "-d", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Did you mean: rl/nemo_rl/rlvr?" in proc.stderr


def test_list_and_show_json(tmp_path):
    listing = json.loads(nemotron("steps", "list", "--json", cwd=tmp_path).stdout)
    assert [s["id"] for s in listing][-1] == "rl/nemo_rl/rlvr"
    assert list(listing[0]) == [
        "id",
        "name",
        "category",
        "description",
        "tags",
        "path",
        "consumes",
        "produces",
        "parameters",
    ]
    only = json.loads(nemotron("steps", "list", "--json", "--produces", "checkpoint_hf", cwd=tmp_path).stdout)
    assert [s["id"] for s in only] == ["convert/megatron_to_hf"]
    shown = json.loads(nemotron("steps", "show", "rl/nemo_rl/rlvr", "--json", cwd=tmp_path).stdout)
    assert shown["runspec"]["default_config"] == "default"
    assert {p["name"]: p["default"] for p in shown["parameters"]}["grpo.num_generations_per_prompt"] == 8
    human = nemotron("steps", "show", "rlvr", cwd=tmp_path).stdout
    assert "grpo.num_generations_per_prompt (default=8)" in human and "Runspec" in human


def test_native_snakemake_plans_the_default_run(tmp_path):
    """`snakemake -n` from the repo root plans the tiny run without the CLI."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--directory", str(tmp_path)],
        cwd=REPO_ROOT,
        env=nemotron_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tiny_sft" in proc.stdout and "rlvr" in proc.stdout
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "step,args",
    [
        ("data_prep/rl_prep", ["data.train.data_path={d}/train.jsonl", "data.validation.data_path={d}/val.jsonl"]),
        ("convert/hf_to_megatron", ["hf_model_id={d}"]),
        ("convert/megatron_to_hf", ["megatron_path={d}"]),
    ],
)
def test_other_steps_dry_run(step, args, tmp_path):
    data_files(tmp_path)
    proc = nemotron("steps", "run", step, "-d", *[a.format(d=tmp_path) for a in args], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{step.rsplit('/', 1)[-1]}:" in proc.stdout
    assert not (tmp_path / "results").exists()


def _upstream(relative: str) -> Path:
    # ../shared beside the clone (CI); a worktree (wt/<name>/) sits one level deeper.
    for root in (REPO_ROOT.parent, REPO_ROOT.parent.parent):
        path = root / "shared" / "reference" / "upstream_configs" / relative
        if path.is_file():
            return path
    pytest.skip("../shared/reference/upstream_configs is not beside this clone")


def test_nemotrons_own_default_yaml_plans_with_a_hub_model(tmp_path):
    """Nemotron's default.yaml with -c PATH (no cluster section, Nemotron-only keys, a hub model) plans given only
    data paths; the plan says the model must be downloadable at run time and how its force_on_policy_ratio with
    3 optimizer steps per GRPO step (which NeMo-RL asserts on) is run."""
    config = str(_upstream("nemotron/default.yaml"))
    proc = nemotron("steps", "run", "rlvr", "-c", config, "-d", *data_files(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "note: loss_fn.force_on_policy_ratio=true with 3 optimizer steps per GRPO step" in proc.stdout
    assert "rlvr: Missing output files" in proc.stdout
    assert "note: policy.model_name 'meta-llama/Llama-3.2-1B-Instruct' is not a local folder" in proc.stdout
    assert not (tmp_path / "results").exists()


def test_nemo_rl_example_config_is_refused_in_one_message(tmp_path):
    proc = nemotron("steps", "run", "rlvr", "-c", str(_upstream("nemo_rl/grpo_math_1B.yaml")), "-d", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("invalid config") == 1
    assert "Unsupported interpolation" not in proc.stderr and "OpenMathInstruct-2" in proc.stderr


def test_removal_override_reaches_the_config_not_snakemake(tmp_path):
    """`~key` as the README writes it: the key takes its default (tiny's val_period 50 -> 0)."""
    proc = nemotron("steps", "run", "rlvr", "-c", "tiny", "-d", "~grpo.val_period", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "val_period: 0" in proc.stdout
