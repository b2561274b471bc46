"""The shipped `lepton_rl_nemo_rl_rlvr` profile: fully commented, and it runs the real workflow's first rule
through `nemotron steps run` against the fake workspace (the profile's $VARS set as a user would)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml

from rlvr.paths import PROFILES_DIR
from tests.conftest import REPO_ROOT
from tests.lepton.conftest import TOKEN

PROFILE = PROFILES_DIR / "lepton_rl_nemo_rl_rlvr" / "config.yaml"


def test_every_key_is_commented():
    """Each line that sets a value carries a comment saying what it does."""
    for number, line in enumerate(PROFILE.read_text().splitlines(), 1):
        body = line.split("#", 1)[0].rstrip()
        sets_value = ":" in body and not body.endswith(":")
        assert not sets_value or "#" in line, f"{PROFILE}:{number} has no comment: {line!r}"


def test_profile_places_rlvr_on_the_gpu_shape():
    """CPU shape by default, the GPU shape for rlvr and the conversions; secrets only as references."""
    data = yaml.safe_load(PROFILE.read_text())
    assert data["executor"] == "lepton"
    assert data["default-resources"]["lepton_resource_shape"] == "cpu.small"
    for rule in ("rlvr", "hf_to_megatron", "megatron_to_hf"):
        assert data["set-resources"][rule]["lepton_resource_shape"] == "$LEPTON_GPU_SHAPE"
    assert data["lepton-secrets"] == ["HF_TOKEN=HF_TOKEN"]
    assert not any("TOKEN" in item or "KEY" in item for item in data["lepton-env-vars"])


@pytest.mark.slow
def test_first_rule_of_the_tiny_run_goes_through_the_profile(fake, tmp_path):
    """`nemotron steps run rlvr -c tiny -r lepton_rl_nemo_rl_rlvr --until tiny_data` submits one Lepton job
    with the profile's shape, node group id, mount, env vars, secret reference and shared memory; rc=0."""
    workspace = tmp_path / "ws"
    run = workspace / "run"
    run.mkdir(parents=True)
    fake.secrets["HF_TOKEN"] = "hf_profile_secret_99"
    fake.node_groups = {"ng-123": "fake-pool"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEPTON_", "SNAKEMAKE_LEPTON_"))}
    env.pop("RL_OUTPUT_DIR", None)
    env.update(
        LEPTON_WORKSPACE_ID=fake.workspace,
        LEPTON_WORKSPACE_URL=fake.url,
        LEPTON_WORKSPACE_TOKEN=TOKEN,
        RLVR_LEPTON_IMAGE="fake/rlvr:1",
        LEPTON_NODE_GROUP="fake-pool",
        LEPTON_GPU_SHAPE="gpu.8xh100-80gb",
        NEMOTRON_WORKSPACE=str(workspace),
        NEMOTRON_HOST_MOUNT="/",
        NEMOTRON_MOUNT_FROM="node-nfs:fake",
        HF_TOKEN="hf_profile_secret_99",
        PYTHONPATH=str(REPO_ROOT / "src") + os.pathsep + env.get("PYTHONPATH", ""),
    )
    cmd = [
        sys.executable,
        "-m",
        "rlvr.cli.main",
        "steps",
        "run",
        "rl/nemo_rl/rlvr",
        "-c",
        "tiny",
        "-r",
        "lepton_rl_nemo_rl_rlvr",
        "--until",
        "tiny_data",
        "--lepton-python-executable",
        sys.executable,
        "--lepton-poll-seconds",
        "0.5",
    ]
    proc = subprocess.run(cmd, cwd=run, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert (run / "results" / "tiny" / "tiny_data" / "rl_train.jsonl").stat().st_size > 0
    (post,) = fake.calls("POST", "/jobs")
    spec = post.body["spec"]
    assert re.fullmatch(r"rlvr-tiny-data-\d+-[0-9a-f]{6}", post.body["metadata"]["id"])
    assert spec["resource_shape"] == "cpu.small" and spec["container"]["image"] == "fake/rlvr:1"
    assert spec["affinity"] == {"allowed_dedicated_node_groups": ["ng-123"]}
    assert spec["mounts"] == [{"path": "/", "mount_path": str(workspace), "from": "node-nfs:fake"}]
    assert spec["shared_memory_size"] == 65536 and spec["ttl_seconds_after_finished"] == 86400
    envs = {e["name"]: e for e in spec["envs"]}
    assert envs["HF_HOME"]["value"] == f"{workspace}/hf"
    assert envs["HF_TOKEN"] == {"name": "HF_TOKEN", "value_from": {"secret_name_ref": "HF_TOKEN"}}
    assert "hf_profile_secret_99" not in str(post.body) + proc.stdout + proc.stderr
