"""What a config change re-runs: `snakemake -n` on a run folder whose every output is up to date.

A rule's params hold the digest of the config keys that change its outputs (rlvr/stages/sections.py), so after
each kind of change the plan must name exactly the rules that change and those downstream of them. The run folder
is made with ``snakemake --touch`` over empty outputs (no compute: Snakemake records the params of each job as if
it had run), once per module; each plan is one dry run of the real Snakefile.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr.workflow import REQUEST_KEY, WorkflowRequest
from tests.conftest import REPO_ROOT, nemotron_env

pytestmark = pytest.mark.slow  # 8 dry runs of the Snakefile: about 40 s on two idle cores

TRAINING = {"rlvr", "megatron_to_hf", "report"}  # GRPO and what follows it
PLANNED_RULE = re.compile(r"^(?:local)?rule (\w+):$", re.MULTILINE)


def snakemake(workdir: Path, overrides: list[str], *args: str) -> subprocess.CompletedProcess:
    request = WorkflowRequest(step="rl/nemo_rl/rlvr", config="tiny", overrides=overrides)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(REPO_ROOT / "Snakefile"),
            "--directory",
            str(workdir),
            "--config",
            f"{REQUEST_KEY}={request.to_cli_value()}",
            *args,
        ],
        env=nemotron_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def planned(workdir: Path, overrides: list[str]) -> set[str]:
    """The rules `snakemake -n` would run (without `all`)."""
    proc = snakemake(workdir, overrides, "-n")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    plan = proc.stdout + proc.stderr  # (Snakemake 9 logs the plan to stderr)
    assert "This was a dry-run" in plan or "Nothing to be done" in plan, plan[-2000:]
    return set(PLANNED_RULE.findall(plan)) - {"all"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A working folder where the tiny run looks finished: every output exists and has Snakemake metadata."""
    workdir = tmp_path_factory.mktemp("finished")
    proc = snakemake(workdir, [], "-n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    outputs = 0
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip().startswith("output:"):
            for path in line.split(":", 1)[1].split(","):
                target = workdir / path.strip()
                # Folders (checkpoints, HF exports, rl_prep's folder) have no suffix; files all have one.
                outputs += 1
                if target.suffix:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.touch()
                else:
                    target.mkdir(parents=True, exist_ok=True)
    assert outputs == 17  # tiny_data 4, report 5, rlvr 3, and one each for the other five rules
    proc = snakemake(workdir, [], "--touch", "--forceall", "--cores", "1")  # records every job's params
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert planned(workdir, []) == set()
    return workdir


@pytest.mark.parametrize(
    "overrides,expected",
    [
        # Cosmetic: where metrics go and how step checkpoints are kept change no output.
        (
            ["logger.tensorboard_enabled=false", "checkpointing.keep_top_k=1", "logger.num_val_samples_to_print=3"],
            set(),
        ),
        # A GRPO key: training and what follows it; never rl_prep nor the reward pre-flight.
        (["grpo.max_num_steps=3", "grpo.seed=7"], TRAINING),
        # The export's dtype: the export and the report only.
        (["checkpointing.export_dtype=bfloat16"], {"megatron_to_hf", "report"}),
        # A verifier setting: the pre-flight checks it, and training uses it.
        (["env.math.timeout_s=20.0"], {"reward_preflight"} | TRAINING),
        # A data key rl_prep reads: rl_prep and everything after it.
        (["data.max_input_seq_length=40"], {"rl_prep", "reward_preflight"} | TRAINING),
        # The SFT bootstrap: the policy, its conversion, the prompts templated with its tokenizer, and on.
        (["tiny.sft.warmup_steps=49"], {"tiny_sft", "hf_to_megatron", "rl_prep", "reward_preflight"} | TRAINING),
    ],
    ids=["cosmetic", "grpo", "export_dtype", "verifier", "data", "tiny_sft"],
)
def test_a_change_re_runs_exactly_the_rules_whose_outputs_it_changes(finished, overrides, expected):
    assert planned(finished, overrides) == expected
