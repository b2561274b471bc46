"""Real Snakemake runs through `--executor lepton` against the fake workspace, which runs each job for real.

The "shared mount" is the local disk: the fake starts each job's command as a local process, so outputs
appear where Snakemake expects them. Every run is bounded (subprocess timeouts, fake.wait_for deadlines).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.lepton.conftest import TOKEN

SECRET = "hf_fake_secret_value_42"

TWO_RULES = """
envvars: "HF_TOKEN"

rule all:
    input: "results/b.txt"

rule a:
    output: "results/a.txt"
    shell: "echo a-from-$LEPTON_JOB_NAME label=$RUN_LABEL > {output}"

rule b:
    input: "results/a.txt"
    output: "results/b.txt"
    shell: "cat {input} > {output} && printf %s \\"$HF_TOKEN\\" | sha256sum | cut -d' ' -f1 >> {output}"
"""

FAILING = """
rule all:
    input: "results/x.txt"

rule x:
    output: "results/x.txt"
    shell: "echo preparing; echo boom-marker-line >&2; exit 3"
"""

SLEEPING = """
rule all:
    input: "results/slow.txt"

rule slow:
    output: "results/slow.txt"
    shell: "sleep 60; touch {output}"
"""


def snakemake_cmd(workdir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--executor",
        "lepton",
        "--jobs",
        "2",
        "--latency-wait",
        "2",
        "--lepton-image",
        "fake/rlvr:test",
        "--lepton-resource-shape",
        "cpu.small",
        "--lepton-mounts",
        f"/fake-volume:{workdir}:node-nfs:fake",
        "--lepton-shared-mount",
        str(workdir),
        "--lepton-python-executable",
        sys.executable,
        "--lepton-poll-seconds",
        "0.3",
        "--lepton-poll-max-seconds",
        "1",
        *extra,
    ]


def run_env(fake, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEPTON_", "SNAKEMAKE_LEPTON_"))}
    env.update(
        LEPTON_WORKSPACE_ID=fake.workspace,
        LEPTON_WORKSPACE_URL=fake.url,
        LEPTON_WORKSPACE_TOKEN=TOKEN,
        PYTHONPATH=str(REPO_ROOT / "src") + os.pathsep + env.get("PYTHONPATH", ""),
        **extra,
    )
    env.pop("RL_OUTPUT_DIR", None)
    return env


def workflow(tmp_path: Path, snakefile: str) -> Path:
    work = tmp_path / "shared" / "run"
    work.mkdir(parents=True)
    (work / "Snakefile").write_text(textwrap.dedent(snakefile))
    return work


@pytest.mark.slow
def test_two_rule_workflow_runs_on_lepton(fake, tmp_path):
    """rc=0; each rule is one Lepton job whose command runs the Snakemake job in the shared workdir; the
    secret reaches the job by reference only and never appears in a spec or in Snakemake's output."""
    work = workflow(tmp_path, TWO_RULES)
    shared = work.parent
    fake.secrets["hf-token"] = SECRET
    cmd = snakemake_cmd(
        shared,
        "--lepton-secrets",
        "HF_TOKEN=hf-token",
        "--lepton-env-vars",
        "RUN_LABEL=e2e",
        "--lepton-forward-env",
        "RLVR_FORWARDED",
        "--set-resources",
        "b:lepton_resource_shape=$SHAPE_OF_B",
        "b:lepton_image=nvcr.io/x/y:1.0",
    )
    proc = subprocess.run(
        cmd,
        cwd=work,
        env=run_env(fake, HF_TOKEN=SECRET, RLVR_FORWARDED="yes", SHAPE_OF_B="cpu.large"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Lepton: workspace {fake.url} (leptonai " in proc.stderr
    lines = (work / "results" / "b.txt").read_text().splitlines()
    assert lines[0].startswith("a-from-smk-a-") and lines[0].endswith("label=e2e")
    assert lines[1] == hashlib.sha256(SECRET.encode()).hexdigest()

    posts = {p.body["metadata"]["id"].split("-")[1]: p for p in fake.calls("POST", "/jobs")}
    assert sorted(posts) == ["a", "b"]
    # Per-rule resources (also $VARS, which Snakemake leaves unexpanded there) override the settings.
    placement = {
        rule: (p.body["spec"]["resource_shape"], p.body["spec"]["container"]["image"]) for rule, p in posts.items()
    }
    assert placement == {"a": ("cpu.small", "fake/rlvr:test"), "b": ("cpu.large", "nvcr.io/x/y:1.0")}
    for post in posts.values():
        spec = post.body["spec"]
        script = spec["container"]["command"][2]
        assert script.startswith(f"cd {work} && {sys.executable} -m snakemake") and "--target-jobs" in script
        envs = {e["name"]: e for e in spec["envs"]}
        assert envs["HF_TOKEN"] == {"name": "HF_TOKEN", "value_from": {"secret_name_ref": "hf-token"}}
        assert envs["RUN_LABEL"]["value"] == "e2e" and envs["RLVR_FORWARDED"]["value"] == "yes"
        assert spec["mounts"] == [{"path": "/fake-volume", "mount_path": str(shared), "from": "node-nfs:fake"}]
    assert SECRET not in json.dumps([r.body for r in fake.requests])
    assert SECRET not in proc.stdout + proc.stderr
    assert not fake.calls("DELETE")


@pytest.mark.slow
def test_failed_job_is_reported_with_its_logs(fake, tmp_path):
    """A rule exiting 3 fails the run; Snakemake's error quotes the job's log and the log is saved to a file."""
    work = workflow(tmp_path, FAILING)
    proc = subprocess.run(
        snakemake_cmd(work.parent), cwd=work, env=run_env(fake), capture_output=True, text=True, timeout=120
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ended in state Failed" in out and "boom-marker-line" in out, out
    (log,) = (work / ".snakemake" / "lepton_logs" / "x").glob("*.log")
    assert "boom-marker-line" in log.read_text() and "preparing" in log.read_text()
    assert not (work / "results" / "x.txt").exists()


@pytest.mark.slow
def test_interrupt_cancels_the_lepton_job(fake, tmp_path):
    """SIGINT to Snakemake while a job runs sends DELETE /jobs/{id}; the job's process is killed, no output."""
    work = workflow(tmp_path, SLEEPING)
    # SIGINT back to its default in the child: a suite started from a background shell inherits it ignored, and
    # Snakemake would then never see the Ctrl-C this test sends.
    proc = subprocess.Popen(
        snakemake_cmd(work.parent),
        cwd=work,
        env=run_env(fake),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        fake.wait_for(
            lambda: any(j.procs and j.state == "Running" for j in fake.jobs.values()), timeout=60, what="a running job"
        )
        (job,) = fake.jobs.values()
        fake.wait_for(
            lambda: any("sleep 60" in line or "slow" in line for line in job.logs.get(job.replica_ids()[0], [])),
            timeout=60,
            what="the rule to start inside the job",
        )
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode != 0
    assert [c.path for c in fake.calls("DELETE")] == [f"/jobs/{job.id}"], out
    assert job.deleted and all(p.poll() is not None for p in job.procs)
    assert f"Cancelled Lepton job {job.id}" in out
    assert not (work / "results" / "slow.txt").exists()


@pytest.mark.slow
def test_run_without_shared_storage_is_refused(fake, tmp_path):
    """No shared mount and no storage plugin: Snakemake stops before any submission, saying how to fix it."""
    work = workflow(tmp_path, FAILING)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--executor",
        "lepton",
        "--jobs",
        "1",
        "--lepton-image",
        "fake/rlvr:test",
        "--lepton-resource-shape",
        "cpu.small",
    ]
    proc = subprocess.run(cmd, cwd=work, env=run_env(fake), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Lepton jobs cannot see this machine's disk" in proc.stdout + proc.stderr
    assert "--default-storage-provider" in proc.stdout + proc.stderr
    assert not fake.calls("POST")


@pytest.mark.slow
def test_secret_value_in_env_vars_is_refused(fake, tmp_path):
    """A secret-looking name in lepton-env-vars stops the run before submission and points to lepton-secrets."""
    work = workflow(tmp_path, FAILING)
    cmd = snakemake_cmd(work.parent, "--lepton-env-vars", "WANDB_API_KEY=abcdef123456")
    proc = subprocess.run(cmd, cwd=work, env=run_env(fake), capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "lepton-secrets as 'WANDB_API_KEY=WANDB_API_KEY'" in out
    assert "abcdef123456" not in out.replace("WANDB_API_KEY=abcdef123456", "")
    assert not fake.calls("POST")


def test_status_poll_before_setup_is_harmless():
    """Snakemake's poller may call check_active_jobs before __post_init__ has run: with no jobs it must not
    touch any attribute (an exception there ends the poller and the run waits forever)."""
    import asyncio

    from snakemake_executor_plugin_lepton import Executor

    bare = Executor.__new__(Executor)

    async def collect():
        return [info async for info in bare.check_active_jobs([])]

    assert asyncio.run(collect()) == []
