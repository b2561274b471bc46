"""Slurm secrets by value: the variables a config's secrets read are secrets too, and a rule job's Snakemake gets
them back from the run's 0600 file (in its own process, never through Slurm)."""

from __future__ import annotations

import os

from rlvr.config import load_step_config
from rlvr.config.secrets import secret_env_vars
from rlvr.launch.secret_env import (
    mark_config_secrets,
    restore_from_secrets_file,
    secret_names,
    without_secrets,
    write_secrets_file,
)
from rlvr.steps.index import resolve_step


def test_variables_read_by_config_secrets_are_found(monkeypatch):
    monkeypatch.setenv("PLAIN_NAME", "v1")
    monkeypatch.setenv("DATA_ROOT", "/data")
    cfg = load_step_config(
        resolve_step("rl/nemo_rl/rlvr"),
        "tiny",
        ["logger.wandb.name=x-${oc.env:PLAIN_NAME}", "data.train.data_path=${oc.env:DATA_ROOT}/t.jsonl"],
    )
    # DATA_ROOT feeds an allow-listed path only: not a secret.
    assert secret_env_vars(cfg.resolved, cfg.unresolved) == ["PLAIN_NAME"]


def test_a_neutral_variable_named_by_the_config_is_kept_out_of_jobs(tmp_path):
    env = mark_config_secrets({"PATH": "/bin", "PLAIN_NAME": "v1", "HF_TOKEN": "hf", "HOME": "/h"}, ["PLAIN_NAME"])
    assert secret_names(env) == ["HF_TOKEN", "PLAIN_NAME"]
    assert set(without_secrets(env)) == {"PATH", "HOME", "RLVR_CONFIG_ENV_REFS"}
    _, path = write_secrets_file(env, tmp_path / "s")
    assert "export PLAIN_NAME=v1" in path.read_text()
    assert mark_config_secrets({"A": "1"}, []) == {"A": "1"}


def test_a_rule_job_restores_its_secrets_from_the_file_without_overriding(tmp_path):
    user_bash_env = tmp_path / "user.sh"
    user_bash_env.write_text("export FROM_USER=1\n")
    env, path = write_secrets_file(
        {"PATH": "/bin", "WANDB_API_KEY": 'w\'1 $x "q"', "MY_TOKEN": "local", "BASH_ENV": str(user_bash_env)},
        tmp_path / "s",
    )
    job_env = {"PATH": "/bin", "RLVR_ENV_FILE": env["RLVR_ENV_FILE"], "MY_TOKEN": "already-here"}
    assert restore_from_secrets_file(job_env) == ["WANDB_API_KEY"]
    assert job_env["WANDB_API_KEY"] == 'w\'1 $x "q"' and job_env["MY_TOKEN"] == "already-here"
    assert restore_from_secrets_file({"PATH": "/bin"}) == []
    os.unlink(path)
    assert restore_from_secrets_file({"RLVR_ENV_FILE": str(path)}) == []
