"""Helpers of the Slurm tests: a client environment, job states from squeue, bounded CLI runs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from tests.slurm.local_slurm import LocalSlurm


def slurm_env(cluster: LocalSlurm, **extra: str) -> dict[str, str]:
    """The environment of a client of the test cluster (plus the package on PYTHONPATH)."""
    from tests.conftest import nemotron_env

    return {**nemotron_env(), **cluster.env, **extra}


def job_state(job_id: str, env: dict[str, str]) -> str:
    """The job's state from squeue (there is no sacct: no accounting); finished jobs stay listed for an hour."""
    proc = subprocess.run(
        ["squeue", "--states=all", "-h", "-j", job_id, "-o", "%T"], env=env, capture_output=True, text=True, timeout=30
    )
    return proc.stdout.strip()


def wait_for_job(job_id: str, env: dict[str, str], timeout_s: float = 300) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = job_state(job_id, env)
        if state and state not in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            return state
        time.sleep(1)
    raise AssertionError(f"Slurm job {job_id} still {job_state(job_id, env)} after {timeout_s:.0f} s")


def run_bounded(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own session; on time-out kill the whole group (a hung Snakemake ignores SIGTERM)."""
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(
            f"{' '.join(cmd)} did not finish in {timeout_s:.0f} s:\n{out[-3000:]}\n{err[-3000:]}"
        ) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
