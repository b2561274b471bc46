"""The Slurm pre-flight guards (status polling, SLURM_CONF wrappers), the secrets file and the controller job.

These run without a cluster: the wrappers and the secrets file are executed for real by /bin/sh and bash with a
fake ``sbatch`` on PATH that records the environment it was started with.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from rlvr.errors import UserError
from rlvr.launch.profile import ControllerSettings, LaunchSettings, Profile
from rlvr.launch.secret_env import write_secrets_file
from rlvr.launch.slurm import ControllerJob, SlurmConfig, client_wrappers, parse_scontrol_config, status_command_args

SCONTROL = """Configuration data as of 2026-11-25T05:39:44
AccountingStorageType   = accounting_storage/none
AccountingStorageHost   = localhost
MinJobAge               = 3600 sec
MpiDefault              = none
"""
NO_ACCOUNTING = SlurmConfig(accounting="accounting_storage/none", min_job_age_s=3600)
ACCOUNTING = SlurmConfig(accounting="accounting_storage/slurmdbd", min_job_age_s=300)


def profile(**options) -> Profile:
    return Profile(path=Path("/p"), options={"executor": "slurm", **options}, launch=LaunchSettings())


def test_parse_scontrol_config():
    assert parse_scontrol_config(SCONTROL) == NO_ACCOUNTING
    with pytest.raises(UserError, match="no AccountingStorageType"):
        parse_scontrol_config("garbage")


def test_without_accounting_the_plugin_polls_with_squeue():
    """No slurmdbd: squeue is forced unless the profile chose; a profile insisting on sacct is refused."""
    assert status_command_args(profile(), NO_ACCOUNTING, []) == ["--slurm-status-command", "squeue"]
    assert status_command_args(profile(**{"slurm-status-command": "squeue"}), NO_ACCOUNTING, []) == []
    with pytest.raises(UserError, match="sacct, but this cluster has no accounting"):
        status_command_args(profile(**{"slurm-status-command": "sacct"}), NO_ACCOUNTING, [])
    with pytest.raises(UserError, match="no accounting"):
        status_command_args(profile(), NO_ACCOUNTING, ["--slurm-status-command=sacct"])


def test_with_accounting_the_plugin_default_stays():
    assert status_command_args(profile(), ACCOUNTING, []) == []
    assert status_command_args(profile(**{"slurm-status-command": "sacct"}), ACCOUNTING, []) == []


def test_min_job_age_below_three_initial_waits_is_refused_without_accounting():
    """The plugin would silently fall back to sacct when MinJobAge < 3 × init seconds: refuse with the fix."""
    short = SlurmConfig(accounting="accounting_storage/none", min_job_age_s=100)
    with pytest.raises(UserError, match="at most 33"):
        status_command_args(profile(), short, [])  # plugin default: 40 s
    assert status_command_args(profile(**{"slurm-init-seconds-before-status-checks": 10}), short, []) == [
        "--slurm-status-command",
        "squeue",
    ]


@pytest.fixture
def fake_sbatch(tmp_path) -> tuple[Path, Path]:
    """A `sbatch` that writes the environment it got to env.txt."""
    real_bin = tmp_path / "real_bin"
    real_bin.mkdir()
    script = real_bin / "sbatch"
    script.write_text(f"#!/bin/sh\nenv > {tmp_path / 'env.txt'}\necho 123\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return real_bin, tmp_path / "env.txt"


def test_wrappers_restore_slurm_conf_and_drop_secrets(fake_sbatch, tmp_path):
    """A nested call without SLURM_CONF gets it back; sbatch never sees a secret; PATH leads to the wrappers."""
    real_bin, env_txt = fake_sbatch
    env = {"PATH": f"{real_bin}:/usr/bin:/bin", "SLURM_CONF": "/opt/slurm/etc/slurm.conf", "HF_TOKEN": "hf_x"}
    wrapped = client_wrappers(tmp_path / "wrap", env, unset=["HF_TOKEN"])
    assert wrapped["PATH"].startswith(f"{(tmp_path / 'wrap').resolve()}:")
    stripped = {"PATH": wrapped["PATH"], "HF_TOKEN": "hf_x"}  # as the jobstep plugin leaves it
    assert subprocess.run(["sbatch", "--wrap", "x"], env=stripped, capture_output=True, text=True).stdout == "123\n"
    seen = env_txt.read_text()
    assert "SLURM_CONF=/opt/slurm/etc/slurm.conf" in seen and "hf_x" not in seen


def test_no_wrappers_when_nothing_needs_them(tmp_path):
    env = {"PATH": "/usr/bin:/bin"}
    assert client_wrappers(tmp_path / "wrap", env) is env and not (tmp_path / "wrap").exists()


def test_secrets_file_is_private_and_bash_gets_the_values_back(tmp_path):
    """0700 folder, 0600 file; a bash started with the new env (BASH_ENV) sees the secret, /bin/sh does not."""
    env, path = write_secrets_file(
        {"PATH": os.environ["PATH"], "WANDB_API_KEY": "w'1 $x", "HOME": "/h"}, tmp_path / ".slurm"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert env["BASH_ENV"] == env["RLVR_ENV_FILE"] == str(path)
    clean = {k: v for k, v in env.items() if k != "WANDB_API_KEY"}
    out = subprocess.run(["bash", "-c", 'printf %s "$WANDB_API_KEY"'], env=clean, capture_output=True, text=True)
    assert out.stdout == "w'1 $x"
    out = subprocess.run(["sh", "-c", 'printf %s "${WANDB_API_KEY:-none}"'], env=clean, capture_output=True, text=True)
    assert out.stdout == "none"
    assert write_secrets_file({"PATH": "/bin"}, tmp_path / "none") == ({"PATH": "/bin"}, None)


def test_controller_job_script_and_submission_carry_no_secret(fake_sbatch, tmp_path, monkeypatch):
    """The -b batch script sources the secrets file and deletes it; sbatch runs without the secret."""
    real_bin, env_txt = fake_sbatch
    monkeypatch.chdir(tmp_path)
    env, secrets = write_secrets_file({"PATH": f"{real_bin}:/usr/bin:/bin", "MY_TOKEN": "tok-1"}, tmp_path / "s")
    job = ControllerJob(
        argv=["/py", "-m", "snakemake", "--profile", "/p"],
        run_dir=tmp_path / "run",
        settings=ControllerSettings(partition="cpu", time="1:00:00", extra=["--qos=long"]),
        name="rlvr-tiny-controller",
        secrets_file=secrets,
    )
    assert job.submit(env) == "123"
    script = job.script_path.read_text()
    assert f". {secrets}" in script and f"trap 'rm -f {secrets}' EXIT" in script
    assert script.rstrip().endswith("/py -m snakemake --profile /p") and "tok-1" not in script
    assert "tok-1" not in env_txt.read_text()
    argv = job.sbatch_argv()
    assert {"--partition=cpu", "--time=1:00:00", "--qos=long", f"--output={job.log}"} <= set(argv)
    assert argv[-1] == str(job.script_path)


def test_odd_secret_names_do_not_break_the_wrappers(fake_sbatch, tmp_path):
    """A secret whose name is no shell identifier is still dropped, and sbatch still runs."""
    real_bin, env_txt = fake_sbatch
    env = {"PATH": f"{real_bin}:/usr/bin:/bin", "my.api-key": "odd-1", "API_KEY": "plain-1"}
    wrapped = client_wrappers(tmp_path / "wrap", env, unset=["my.api-key", "API_KEY"])
    proc = subprocess.run(["sbatch"], env=wrapped, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout == "123\n"
    assert "odd-1" not in env_txt.read_text() and "plain-1" not in env_txt.read_text()
    _, path = write_secrets_file(env, tmp_path / "s")
    assert "plain-1" in path.read_text() and "odd-1" not in path.read_text()
