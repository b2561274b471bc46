"""Profiles: the shipped ones parse, are fully commented and plan the tiny/default runs; launch.yaml is typed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rlvr.errors import UserError
from rlvr.launch.profile import load_profile, parse_launch_settings
from rlvr.launch.topology import TopologyError
from rlvr.paths import PROFILES_DIR
from tests.conftest import nemotron_env

SLURM_PROFILES = ["slurm_rl_nemo_rl_rlvr", "test_slurm"]


@pytest.mark.parametrize("name", SLURM_PROFILES)
def test_every_key_is_commented(name):
    """Each line that sets a value in config.yaml / launch.yaml carries a comment saying what it does."""
    for path in sorted((PROFILES_DIR / name).glob("*.yaml")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            body = line.split("#", 1)[0].rstrip()
            sets_value = ":" in body and not body.endswith(":")
            assert not sets_value or "#" in line, f"{path}:{number} has no comment: {line!r}"


def test_shipped_slurm_profile_resources():
    """The rlvr rule asks for 8 GPUs per node in the batch step; other rules get the defaults."""
    prof = load_profile(PROFILES_DIR / "slurm_rl_nemo_rl_rlvr")
    assert prof.executor == "slurm"
    rlvr = prof.rule_resources("rlvr")
    assert (rlvr["gres"], rlvr["mpi"], rlvr["slurm_partition"]) == ("gpu:8", "srun", "batch")
    assert "gres" not in prof.rule_resources("rl_prep")
    assert prof.launch.squash.via == "salloc" and prof.launch.container.image is None
    assert load_profile(PROFILES_DIR / "local").executor == "local"


def test_launch_settings_reject_unknown_keys(tmp_path):
    source = tmp_path / "launch.yaml"
    with pytest.raises(UserError, match="unknown key\\(s\\) container.imag; known keys of 'container': image"):
        parse_launch_settings({"container": {"imag": "x"}}, source)
    with pytest.raises(UserError, match="unknown section\\(s\\) ray"):
        parse_launch_settings({"ray": {}}, source)
    with pytest.raises(UserError, match="squash.via must be one of salloc, srun, local"):
        parse_launch_settings({"squash": {"via": "ssh"}}, source)


def nemotron(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlvr.cli.main", "steps", "run", *args],
        cwd=cwd,
        env=nemotron_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_dry_runs_with_the_slurm_profiles_need_no_cluster(tmp_path):
    """Both Slurm profiles plan their runs without contacting Slurm, and write nothing."""
    proc = nemotron("rl/nemo_rl/rlvr", "-c", "tiny", "-d", "-r", "test_slurm", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "executor: slurm" in proc.stdout and "rlvr: Missing output files" in proc.stdout
    model = tmp_path / "model"
    model.mkdir()
    (tmp_path / "d.jsonl").write_text('{"problem": "1+1", "expected_answer": "2"}\n')
    data = [f"data.train.data_path={tmp_path / 'd.jsonl'}", f"data.validation.data_path={tmp_path / 'd.jsonl'}"]
    proc = nemotron(
        "rlvr", "-c", "default", "-d", "-b", "slurm_rl_nemo_rl_rlvr", f"policy.model_name={model}", *data, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert not (tmp_path / "results").exists()


def test_profile_and_config_topology_disagreement_fails_before_anything(tmp_path):
    """tiny asks for 0 GPUs; the production profile requests 8 per node: one clear error, no traceback."""
    proc = nemotron("rl/nemo_rl/rlvr", "-c", "tiny", "-d", "-r", "slurm_rl_nemo_rl_rlvr", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "requests 8 GPU(s) per node (gres: gpu:8) but cluster.gpus_per_node=0" in proc.stderr
    assert issubclass(TopologyError, UserError)
