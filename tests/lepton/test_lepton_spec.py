"""Job ids, per-rule resources and the job spec built from them (no server)."""

from __future__ import annotations

import re

import pytest

from rlvr.errors import ConfigError
from snakemake_executor_plugin_lepton.polling import Backoff, JobStatus, Outcome, classify
from snakemake_executor_plugin_lepton.spec import JobRequest, build_payload, job_name, num_workers, resource

VALID_ID = re.compile(r"^[a-z][a-z0-9-]*$")


@pytest.mark.parametrize(
    "prefix,rule,jobid",
    [
        ("smk", "rlvr", 3),
        ("rlvr", "hf_to_megatron", 12),
        ("SMK", "__weird__Rule__", 7),
        ("9x", "a", 1),
        ("smk", "a_very_long_rule_name_that_never_fits_the_limit", 123456),
        ("smk", "train_group", "0f8e2c1a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"),
    ],
)
def test_job_names_are_valid_lepton_ids(prefix, rule, jobid):
    """Ids match ^[a-z][a-z0-9-]*$, fit 36 characters, keep jobid and run tag, never end in '-'."""
    name = job_name(prefix, rule, jobid, "a1b2c3")
    assert VALID_ID.match(name) and len(name) <= 36 and not name.endswith("-"), name
    assert name.endswith(f"-{str(jobid)[:8]}-a1b2c3")


def test_job_name_examples_and_too_long_prefix():
    """Readable ids for short names; a prefix leaving no room is a config error."""
    assert job_name("smk", "hf_to_megatron", 4, "ab12cd") == "smk-hf-to-megatron-4-ab12cd"
    with pytest.raises(ConfigError, match="too long"):
        job_name("p" * 30, "rule", 12345, "ab12cd")


def test_per_rule_resources_override_settings():
    """lepton_* resources win over settings; workers come from lepton_num_workers, then nodes, then default."""
    res = {"lepton_resource_shape": "gpu.8xh100-80gb", "nodes": 2, "lepton_image": ""}
    assert resource(res, "resource_shape", "cpu.small") == "gpu.8xh100-80gb"
    assert resource(res, "image", "img") == "img"
    assert num_workers(res, 1) == 2
    assert num_workers({"nodes": 2, "lepton_num_workers": 4}, 1) == 4
    assert num_workers({}, 3) == 3
    for bad in ({"nodes": 0}, {"lepton_num_workers": "two"}):
        with pytest.raises(ConfigError, match="positive integer"):
            num_workers(bad, 1)


def test_payload_for_a_two_worker_gpu_job():
    """All requested fields land where the API expects them; unset optionals are left out."""
    req = JobRequest(
        name="smk-rlvr-3-ab12cd",
        image="nvcr.io/nvidia/nemo-rl:v0.6.0",
        resource_shape="gpu.8xh100-80gb",
        command="cd /mnt/shared && run",
        workers=2,
        node_group_id="ng-1",
        envs=[{"name": "A", "value": "1"}],
        mounts=[{"path": "/v", "mount_path": "/mnt/shared", "from": "node-nfs:s"}],
        image_pull_secrets=("ngc",),
        shared_memory_size=65536,
        ttl_seconds_after_finished=600,
    )
    assert build_payload(req) == {
        "metadata": {"id": "smk-rlvr-3-ab12cd"},
        "spec": {
            "resource_shape": "gpu.8xh100-80gb",
            "container": {
                "image": "nvcr.io/nvidia/nemo-rl:v0.6.0",
                "command": ["/bin/bash", "-c", "cd /mnt/shared && run"],
            },
            "completions": 2,
            "parallelism": 2,
            "intra_job_communication": True,
            "envs": [{"name": "A", "value": "1"}],
            "mounts": [{"path": "/v", "mount_path": "/mnt/shared", "from": "node-nfs:s"}],
            "affinity": {"allowed_dedicated_node_groups": ["ng-1"]},
            "image_pull_secrets": ["ngc"],
            "shared_memory_size": 65536,
            "ttl_seconds_after_finished": 600,
        },
    }
    single = build_payload(JobRequest(name="j-1", image="i", resource_shape="cpu.small", command="x"))["spec"]
    assert "intra_job_communication" not in single and "affinity" not in single and "max_failure_retry" not in single


def test_payload_needs_image_and_shape():
    """Missing image or resource shape is an error naming the setting and the per-rule resource."""
    with pytest.raises(ConfigError, match="lepton_image"):
        build_payload(JobRequest(name="j-1", image="", resource_shape="cpu.small", command="x"))
    with pytest.raises(ConfigError, match="lepton_resource_shape"):
        build_payload(JobRequest(name="j-1", image="i", resource_shape="", command="x"))


@pytest.mark.parametrize(
    "status,outcome",
    [
        (JobStatus("Queueing"), Outcome.RUNNING),
        (JobStatus("Running"), Outcome.RUNNING),
        (JobStatus("Stopping"), Outcome.RUNNING),
        (JobStatus("SomethingNew"), Outcome.RUNNING),
        (JobStatus("Completed", succeeded=1), Outcome.SUCCEEDED),
        (JobStatus("Failed"), Outcome.FAILED),
        (JobStatus("Stopped"), Outcome.FAILED),
        (JobStatus("Deleted"), Outcome.FAILED),
        (JobStatus("", exists=False), Outcome.FAILED),
        (JobStatus("Archived", succeeded=2, workers=2), Outcome.SUCCEEDED),
        (JobStatus("Archived", succeeded=1, failed=1, workers=2), Outcome.FAILED),
    ],
)
def test_state_classification(status, outcome):
    """Final states map to success/failure; everything else (also unknown states) keeps the job active."""
    assert classify(status) is outcome


def test_backoff_grows_while_quiet_and_resets_on_change():
    """From the initial 2 s, quiet polls give 3, 4.5, 6 (capped), 6; a change resets the pause to 2."""
    b = Backoff(2, 6, 1.5)
    assert [b.next(False) for _ in range(4)] == [3, 4.5, 6, 6]
    assert b.next(True) == 2
    with pytest.raises(ValueError):
        Backoff(5, 1, 2)


@pytest.mark.parametrize(
    "shape,gpus",
    [("gpu.8xh100-80gb", 8), ("gpu.2xa10", 2), ("gpu.h100-sxm", 1), ("cpu.small", 0), ("custom-shape", None)],
)
def test_shape_gpus_from_the_name(shape, gpus):
    """GPUs per worker are read from the shape name; unknown naming schemes are not guessed."""
    from snakemake_executor_plugin_lepton.spec import shape_gpus

    assert shape_gpus(shape) == gpus


def test_gpu_request_must_match_the_workers_shape():
    """rlvr's gpus (= gpus_per_node x num_nodes) equal workers x shape GPUs, else a config error with the fix."""
    from snakemake_executor_plugin_lepton.spec import check_gpus

    check_gpus("rlvr", {"gpus": 16}, "gpu.8xh100-80gb", 2)
    check_gpus("rl_prep", {"gpus": 0}, "cpu.small", 1)
    check_gpus("rlvr", {"gpus": 8}, "custom-shape", 1)
    with pytest.raises(ConfigError, match="needs 16 GPUs .* have 8. Choose a shape with 8 GPUs per worker"):
        check_gpus("rlvr", {"gpus": 16}, "gpu.4xh100-80gb", 2)
    with pytest.raises(ConfigError, match="needs 8 GPUs"):
        check_gpus("rlvr", {"gpus": 8}, "cpu.small", 1)
