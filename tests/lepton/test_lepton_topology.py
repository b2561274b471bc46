"""The job script: single-worker form, and the Ray multi-worker launcher run for real with a stub `ray` CLI."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from snakemake_executor_plugin_lepton.topology import RAY_TEMPLATE, job_script, render

STUB_RAY = r"""#!/bin/bash
# Stub of the ray CLI: records calls; a worker's `start` fails until the head is up (then marks it joined);
# `status` answers while the head is up; the head's `stop` takes it down.
echo "rank=$LEPTON_JOB_WORKER_INDEX ray $*" >> "$STUB_DIR/calls"
case "$1" in
  start)
    if [[ "$*" == *--head* ]]; then touch "$STUB_DIR/head_up"; exit 0; fi
    [ -e "$STUB_DIR/head_up" ] && touch "$STUB_DIR/joined" ;;
  status) [ -e "$STUB_DIR/head_up" ] ;;
  stop) if [ "$LEPTON_JOB_WORKER_INDEX" = 0 ]; then rm -f "$STUB_DIR/head_up"; fi ;;
esac
"""
STUB_PYTHON = """#!/bin/bash
# Stub of the head's wait-for-workers step: waits (at most 10 s) until the worker joined.
cat > /dev/null
for i in $(seq 100); do [ -e "$STUB_DIR/joined" ] && break; sleep 0.1; done
echo "rank=$LEPTON_JOB_WORKER_INDEX waited-for-workers" >> "$STUB_DIR/calls"
exit "${STUB_WAIT_RC:-0}"
"""


def test_single_worker_script_enters_the_workdir():
    """One worker: cd (quoted) then the job; storage mode creates the folder first."""
    assert (
        job_script("python -m snakemake x", workdir="/mnt/a b", create_workdir=False, num_workers=1)
        == "cd '/mnt/a b' && python -m snakemake x"
    )
    assert (
        job_script("run", workdir="/tmp/w", create_workdir=True, num_workers=1) == "mkdir -p /tmp/w && cd /tmp/w && run"
    )


def test_render_fills_placeholders_but_not_inside_the_job_command():
    """Placeholders are replaced; text of the Snakemake command itself is left alone; @EXEC_JOB@ is required."""
    out = render(
        "@PYTHON@ @NUM_WORKERS@ @RAY_PORT@ @EXEC_JOB@",
        exec_job="echo @NUM_WORKERS@",
        num_workers=2,
        python="py",
        ray_port=7000,
    )
    assert out == "py 2 7000 echo @NUM_WORKERS@"
    with pytest.raises(ValueError, match="@EXEC_JOB@"):
        render("ray start", exec_job="x", num_workers=2, python="py")


def run_two_workers(tmp_path: Path, exec_job: str, wait_rc: int = 0) -> tuple[list[int], list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("ray", STUB_RAY), ("python-stub", STUB_PYTHON)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    script = job_script(
        exec_job,
        workdir=str(tmp_path),
        create_workdir=False,
        num_workers=2,
        template=RAY_TEMPLATE,
        python=str(bin_dir / "python-stub"),
        ray_port=6380,
        join_timeout_s=20,
        worker_poll_s=0.1,
    )
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STUB_DIR": str(tmp_path),
        "STUB_WAIT_RC": str(wait_rc),
        "LEPTON_JOB_NAME": "job1",
        "LEPTON_JOB_SERVICE_PREFIX": "job1",
        "LEPTON_SUBDOMAIN": "job1-job-svc",
        "LEPTON_JOB_TOTAL_WORKERS": "2",
    }
    # The worker starts first: it must retry until the head is up.
    worker = subprocess.Popen(["bash", "-c", script], env={**env, "LEPTON_JOB_WORKER_INDEX": "1"})
    head = subprocess.Popen(["bash", "-c", script], env={**env, "LEPTON_JOB_WORKER_INDEX": "0"})
    codes = [head.wait(timeout=30), worker.wait(timeout=30)]
    return codes, (tmp_path / "calls").read_text().splitlines()


def test_ray_launcher_head_runs_the_job_and_workers_follow(tmp_path):
    """Worker 0 starts the head, waits for workers, runs the job with RAY_ADDRESS, stops Ray; others exit 0."""
    codes, calls = run_two_workers(tmp_path, 'echo "rank=$LEPTON_JOB_WORKER_INDEX EXEC $RAY_ADDRESS" >> calls')
    assert codes == [0, 0]
    head = [c for c in calls if c.startswith("rank=0")]
    assert head == [
        "rank=0 ray start --head --port=6380 --disable-usage-stats",
        "rank=0 waited-for-workers",
        "rank=0 EXEC job1-0.job1-job-svc:6380",
        "rank=0 ray stop --force",
    ]
    worker = [c for c in calls if c.startswith("rank=1")]
    assert worker[-1] == "rank=1 ray stop --force"
    assert "rank=1 ray start --address=job1-0.job1-job-svc:6380 --disable-usage-stats" in worker
    assert not any("EXEC" in c for c in worker)


def test_ray_launcher_passes_the_job_exit_code_on(tmp_path):
    """A failing Snakemake job fails worker 0 (so the Lepton job fails); other workers still exit 0."""
    codes, calls = run_two_workers(tmp_path, "exit 7")
    assert codes == [7, 0]
    assert calls.count("rank=0 ray stop --force") == 1


def test_ray_launcher_fails_when_workers_never_join(tmp_path):
    """If the wait for workers fails, the head stops Ray and exits 1 without running the job."""
    codes, calls = run_two_workers(tmp_path, "echo EXEC >> calls", wait_rc=1)
    assert codes[0] == 1
    assert "EXEC" not in calls
