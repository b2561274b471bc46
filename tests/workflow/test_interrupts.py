"""Ctrl-C and concurrent runs through the user's command: `nemotron steps run rl/nemo_rl/rlvr -c tiny ...`.

A small tiny run (30 small GRPO steps, checkpoints every 2) is started by the real CLI on a copy of the session's
prepared run (tests/workflow/conftest.py: its data, 10-step SFT policy and conversion), so Snakemake starts at the
reward pre-flight. While it trains (paused for that moment), a second run from another working folder into the same run
folder is refused at once; then the first run gets SIGINT as from a terminal's Ctrl-C. It must stop every process,
release Snakemake's lock and say how to resume; the same command then finishes, with every step once in metrics.jsonl. A
few minutes on two busy cores; the time limits below are only there so that a hang fails instead of blocking the suite.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import SMALL_TINY, nemotron_env
from tests.workflow.conftest import STEP, copy_prepared

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

# Small steps (tests.conftest.SMALL_TINY), so many of them: the Ctrl-C's way from the CLI to the stage must end well
# before the last step, on a busy machine too. (The second CLI's start-up runs while training is paused.)
STEPS = 30
RUN = [
    f"grpo.max_num_steps={STEPS}",
    "checkpointing.save_period=2",
    "grpo.val_period=0",
    "grpo.val_at_start=true",
    "grpo.val_at_end=false",
    "grpo.max_val_samples=32",
    "grpo.val_batch_size=32",
    "logger.tensorboard_enabled=false",
]
COMMAND = [sys.executable, "-m", "rlvr.cli.main", "steps", "run", STEP, "-c", "tiny", *SMALL_TINY, *RUN]


def env_for(output_root: Path) -> dict:
    return {**nemotron_env(), "RL_OUTPUT_DIR": str(output_root)}


def logged_steps(metrics: Path) -> list[int]:
    if not metrics.exists():
        return []
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.endswith("}")]


def processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().split()[2]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(f"{proc.name}: {cmdline}")
    return found


@contextlib.contextmanager
def training_paused(root: Path):
    """SIGSTOP the run's processes that name its folder (the rlvr stage) for the block, SIGCONT after: a second CLI
    that takes seconds to start (a busy machine) then cannot outrun a run of small steps."""
    pids = [int(found.split(":", 1)[0]) for found in processes_mentioning(str(root))]
    assert pids, "no process of the run to pause"
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def wait_for_step(run: subprocess.Popen, metrics: Path, step: int, log: Path) -> None:
    deadline = time.monotonic() + 900
    while run.poll() is None and max(logged_steps(metrics), default=-1) < step:
        assert time.monotonic() < deadline, f"training did not reach step {step}"
        time.sleep(0.05)
    assert run.poll() is None, log.read_text()[-3000:]


def test_ctrl_c_then_the_same_command_resumes_and_a_second_run_is_refused(prepared, tmp_path):
    root = tmp_path / "out"
    copy_prepared(prepared, root / "tiny")
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    metrics = root / "tiny" / "rlvr" / "metrics.jsonl"
    log = tmp_path / "first.log"
    with open(log, "w") as out:
        run = subprocess.Popen(
            COMMAND, cwd=first, env=env_for(root), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_for_step(run, metrics, 1, log)
            with training_paused(root):
                other = subprocess.run(
                    COMMAND, cwd=second, env=env_for(root), capture_output=True, text=True, timeout=300
                )
            assert other.returncode != 0
            assert "is in use by" in other.stderr and f"pid {run.pid}" in other.stderr, other.stderr
            assert "Traceback" not in other.stderr

            wait_for_step(run, metrics, 3, log)
            os.kill(run.pid, signal.SIGINT)  # the CLI only, as a terminal's Ctrl-C reaches the foreground job
            assert run.wait(timeout=300) == 130
        finally:
            if run.poll() is None:
                os.killpg(run.pid, signal.SIGKILL)
                run.wait()
    text = log.read_text()
    assert "resume with the same command" in text, text[-3000:]
    assert "Traceback" not in text.split("interrupted")[-1], text[-3000:]
    interrupted_at = logged_steps(metrics)
    assert 3 <= max(interrupted_at) < STEPS
    assert not processes_mentioning(str(root)), "processes of the run survived the interrupt"
    assert not any((first / ".snakemake" / "locks").glob("*")), "Snakemake's lock was left behind"

    again = subprocess.run(COMMAND, cwd=first, env=env_for(root), capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "[resume] resuming from" in again.stdout + again.stderr
    assert logged_steps(metrics) == list(range(0, STEPS + 1))
    assert json.loads((root / "tiny" / "rlvr" / "summary.json").read_text())["final_step"] == STEPS
