"""The tiny pipeline through ``nemotron steps run ... -r test_slurm`` and ``-b`` on a real Slurm.

A short small tiny run (tests.conftest.SMALL_TINY, 2 GRPO steps, no validation) goes through sbatch as three jobs (the
bootstrap group, rlvr in its batch step as in production, the export group). The evidence is sacct-free: the plugin's
per-job logs under .snakemake/slurm_logs/<rule or group>/<job id>.log and squeue's record of each job id. A fake secret
in the environment must not appear in anything written: job scripts and recorded environments in slurmctld's state,
Slurm and Snakemake logs, the run folder, the CLI's output. Then ``-b`` re-runs the report as a controller job of its
own, with a copy of the profile that leaves the status command to the CLI (the guard must pick squeue).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import NO_VALIDATION, SMALL_TINY
from tests.slurm.jobs import job_state, run_bounded, slurm_env, wait_for_job

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.e2e]

# The small tiny run without validation: the point here is where each rule runs, not what the run learns.
SHORT = [*SMALL_TINY, *NO_VALIDATION, "grpo.max_num_steps=2"]
SECRET_NAME, SECRET = "RLVR_TEST_API_KEY", "s3cr3t-9f1c2d-never-written"
NEMOTRON = [sys.executable, "-m", "rlvr.cli.main", "steps", "run", "rl/nemo_rl/rlvr", "-c", "tiny"]


@pytest.fixture(scope="module")
def tiny_run(slurm_cluster, tmp_path_factory):
    """The attached run: its working folder, the CLI's result and the client environment."""
    work = tmp_path_factory.mktemp("tiny_slurm")
    env = slurm_env(slurm_cluster, **{SECRET_NAME: SECRET})
    started = time.monotonic()
    # About 10x its idle time (2 1/2 minutes): on a loaded, shared machine it is slow, not broken.
    proc = run_bounded([*NEMOTRON, "-r", "test_slurm", *SHORT], cwd=work, env=env, timeout_s=1500)
    print(f"tiny pipeline on Slurm: {time.monotonic() - started:.0f} s")
    return work, proc, env


def submitted_jobs(output: str) -> dict[str, str]:
    """Slurm job id → plugin log path, from the plugin's 'submitted with SLURM jobid N (log: ...)' lines."""
    return dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+?)\)", output))


def test_attached_run_goes_through_sbatch(tiny_run):
    """Exit 0, outputs complete, and each rule ran in a Slurm job that left its log and a COMPLETED record."""
    work, proc, env = tiny_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    run = work / "results" / "tiny"
    assert (run / "report" / "report.md").is_file() and (run / "rlvr" / "checkpoint_megatron").is_dir()
    jobs = submitted_jobs(proc.stdout + proc.stderr)
    folders = {Path(log).parent.name for log in jobs.values()}
    assert "rule_rlvr" in folders and any(f.startswith("group_bootstrap") for f in folders)
    assert any(f.startswith("group_export") for f in folders) and len(jobs) == 3
    for job_id, log in jobs.items():
        assert Path(log).is_file() and Path(log).name == f"{job_id}.log"
        assert job_state(job_id, env) == "COMPLETED"
    rlvr_log = next(Path(log) for log in jobs.values() if Path(log).parent.name == "rule_rlvr").read_text()
    assert "Finished jobid" in rlvr_log and "rule rlvr:" in rlvr_log
    assert json.loads((run / "rlvr" / "summary.json").read_text())["final_step"] == 2


def test_secret_is_never_written(tiny_run, slurm_cluster):
    """The fake secret is nowhere: not in Slurm's state (scripts, recorded environments), logs, run files."""
    work, proc, _ = tiny_run
    assert SECRET not in proc.stdout + proc.stderr
    places = [slurm_cluster.prefix, work]
    leaked = [
        p
        for root in places
        for p in Path(root).rglob("*")
        if p.is_file() and not p.is_symlink() and SECRET.encode() in p.read_bytes()
    ]
    assert leaked == []
    scripts = list(slurm_cluster.state_dir.rglob("script"))
    assert len(scripts) >= 3  # the job scripts were there to be searched
    assert list((work / "results" / "tiny" / ".slurm").glob("secrets-*.env")) == []  # deleted after the run


def test_detached_run_returns_a_job_id_and_completes(tiny_run, slurm_cluster, tmp_path):
    """-b: the CLI returns at once with the controller's job id; the controller submits the report job itself."""
    work, _, env = tiny_run
    profile = tmp_path / "my_slurm"
    shutil.copytree(Path(__file__).parents[2] / "profiles" / "test_slurm", profile)
    options = yaml.safe_load((profile / "config.yaml").read_text())
    options.pop("slurm-status-command")  # the CLI must choose squeue itself (no accounting here)
    (profile / "config.yaml").write_text(yaml.safe_dump(options))
    started = time.monotonic()
    proc = run_bounded(
        [*NEMOTRON, "-b", str(profile), *SHORT, "--forcerun", "report"], cwd=work, env=env, timeout_s=120
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - started < 60
    printed = dict(
        line.split(": ", 1)
        for line in proc.stdout.splitlines()
        if line.startswith(("run folder: ", "log file: ", "job id: "))
    )
    job_id = printed["job id"].removeprefix("slurm:")
    assert job_id.isdigit() and printed["run folder"] == "results/tiny"
    assert wait_for_job(job_id, env, timeout_s=600) == "COMPLETED"
    log = Path(printed["log file"]).read_text()
    assert "rule report:" in log and "(100%) done" in log and "rule rlvr:" not in log
    assert "--slurm-status-command squeue" in Path(printed["log file"]).with_suffix(".sbatch").read_text()
    report_jobs = submitted_jobs(log)
    assert len(report_jobs) == 1 and all(job_state(j, env) == "COMPLETED" for j in report_jobs)
    assert SECRET not in log + Path(printed["log file"]).with_suffix(".sbatch").read_text()
    assert list((work / "results" / "tiny" / ".slurm").glob("secrets-*.env")) == []  # the exit trap ran
