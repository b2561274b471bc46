"""The launch pieces on a real Slurm: the Ray launcher, its topology check, secrets and squashing through salloc.

Each test submits real jobs to the single-node test cluster and reads their state with squeue and their output
files (no sacct: there is no accounting, as on many small clusters).
"""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlvr.launch.profile import SquashSettings
from rlvr.launch.secret_env import write_secrets_file
from rlvr.launch.slurm import client_wrappers
from rlvr.launch.squash import ensure_squashed, import_launcher
from tests.slurm.jobs import slurm_env, wait_for_job

pytestmark = pytest.mark.slurm


def sbatch(env: dict[str, str], cwd: Path, *args: str) -> str:
    proc = subprocess.run(
        ["sbatch", "--parsable", "--partition=debug", "--mem=2000", f"--chdir={cwd}", f"--output={cwd}/%j.out", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.mark.slow
def test_ray_launcher_starts_a_cluster_in_the_allocation_and_stops_it(slurm_cluster, tmp_path):
    """--ray always on one node: head started by srun, RAY_ADDRESS exported, the driver joins, Ray stopped."""
    env = slurm_env(slurm_cluster)
    driver = (
        "import os, ray; ray.init(); "
        "print('driver sees', len(ray.nodes()), 'node(s) at', os.environ['RAY_ADDRESS'], flush=True)"
    )
    cmd = [
        sys.executable,
        "-m",
        "rlvr.launch.ray_slurm",
        "run",
        "--num-nodes",
        "1",
        "--gpus-per-node",
        "0",
        "--ray",
        "always",
        "--port",
        "6397",
        "--timeout",
        "120",
        "--",
        sys.executable,
        "-c",
        driver,
    ]
    job = sbatch(
        env, tmp_path, "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1", "--wrap", subprocess.list2cmdline(cmd)
    )
    state = wait_for_job(job, env, timeout_s=240)
    out = (tmp_path / f"{job}.out").read_text()
    assert state == "COMPLETED", out[-3000:]
    assert "[ray_slurm] Ray cluster ready: 1 node(s)" in out
    assert "driver sees 1 node(s) at 127.0.0.1:6397" in out
    assert wait_until_gone(job, ("ray.scripts.scripts start", "raylet", "gcs_server"), timeout_s=30) == []


def wait_until_gone(job_id: str, names: tuple[str, ...], timeout_s: float) -> list[str]:
    """The job's live processes whose command line contains one of ``names``, once they are gone or time's up. A
    process is the job's when SLURM_JOB_ID is in its environment (Ray's daemons inherit it from `ray start`): another
    Ray on this machine (another test worker's, another user's) is none of this test's business."""
    marker = f"SLURM_JOB_ID={job_id}".encode()
    deadline = time.monotonic() + timeout_s
    while True:
        live = []
        for proc in Path("/proc").iterdir():
            try:
                args = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ours = marker in (proc / "environ").read_bytes().split(b"\0")
            except OSError:  # not a process, or gone meanwhile
                continue
            if ours and any(n in args for n in names):  # a zombie's command line is empty
                live.append(args)
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(1)


def test_topology_mismatch_fails_the_job_before_ray(slurm_cluster, tmp_path):
    """cluster.num_nodes=2 in a 1-node allocation: the job fails at once with both numbers in its log."""
    env = slurm_env(slurm_cluster)
    cmd = [
        sys.executable,
        "-m",
        "rlvr.launch.ray_slurm",
        "run",
        "--num-nodes",
        "2",
        "--gpus-per-node",
        "0",
        "--",
        "touch",
        str(tmp_path / "stage_ran"),
    ]
    job = sbatch(env, tmp_path, "--nodes=1", "--ntasks=1", "--wrap", subprocess.list2cmdline(cmd))
    assert wait_for_job(job, env, timeout_s=120) == "FAILED"
    out = (tmp_path / f"{job}.out").read_text()
    assert (
        f"error: the Slurm allocation does not match the config: cluster.num_nodes=2 but Slurm job {job} has "
        "1 node(s) (localhost)" in out
    )
    assert not (tmp_path / "stage_ran").exists()


def test_secrets_reach_the_rules_bash_but_not_the_job_record(slurm_cluster, tmp_path):
    """Through the wrappers, sbatch submits without the secret; bash in the job gets it back from BASH_ENV."""
    secret = "tok-" + tmp_path.name
    env = slurm_env(slurm_cluster, MY_SERVICE_TOKEN=secret)
    env = client_wrappers(tmp_path / "bin", env, unset=["MY_SERVICE_TOKEN"])
    env, secrets_file = write_secrets_file(env, tmp_path / "private")
    job = sbatch(
        env,
        tmp_path,
        "--ntasks=1",
        "--wrap",
        "bash -c 'echo bash=$MY_SERVICE_TOKEN'; echo sh=${MY_SERVICE_TOKEN:-unset}",
    )
    assert wait_for_job(job, env, timeout_s=120) == "COMPLETED"
    assert (tmp_path / f"{job}.out").read_text().split() == [f"bash={secret}", "sh=unset"]
    recorded = [p for p in slurm_cluster.state_dir.rglob(f"job.{job}/*") if p.is_file()]
    assert {p.name for p in recorded} >= {"environment", "script"}
    assert not any(secret.encode() in p.read_bytes() for p in recorded)
    assert secret in secrets_file.read_text()


def test_squash_imports_on_a_compute_node_once(slurm_cluster, tmp_path, monkeypatch):
    """salloc + srun run (a fake) enroot on the node; the second call reuses the .sqsh without a job."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir()
    enroot = bin_dir / "enroot"
    enroot.write_text('#!/bin/sh\necho "imported $4 in job $SLURM_JOB_ID" > "$3"\n')
    enroot.chmod(enroot.stat().st_mode | stat.S_IXUSR)
    env = slurm_env(slurm_cluster)
    for key, value in {**env, "PATH": f"{bin_dir}:{env['PATH']}"}.items():
        monkeypatch.setenv(key, value)
    launcher = import_launcher(SquashSettings(partition="debug", time="00:05:00"))
    said: list[str] = []
    sqsh = ensure_squashed(
        "nvcr.io/nvidia/nemo-rl:v0.6.0", tmp_path / "sq", force=False, launcher=launcher, say=said.append
    )
    assert sqsh.name == "nvcr_io_nvidia_nemo_rl_v0_6_0.sqsh"
    text = sqsh.read_text()
    assert text.startswith("imported docker://nvcr.io#nvidia/nemo-rl:v0.6.0 in job ") and text.split()[-1].isdigit()
    assert (
        ensure_squashed(
            "nvcr.io/nvidia/nemo-rl:v0.6.0", tmp_path / "sq", force=False, launcher=launcher, say=said.append
        )
        == sqsh
    )
    assert said[-1].startswith("Using existing squashed image") and sqsh.read_text() == text
