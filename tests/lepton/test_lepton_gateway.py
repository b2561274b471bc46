"""The gateway drives the real leptonai client against the loopback fake: what is sent, polled, cancelled, read."""

from __future__ import annotations

import json
import sys

import pytest

from rlvr.errors import ConfigError
from snakemake_executor_plugin_lepton.gateway import LeptonAPIError, LeptonGateway, parse_archived_log
from snakemake_executor_plugin_lepton.polling import Outcome, classify
from snakemake_executor_plugin_lepton.spec import JobRequest, build_payload


def payload(name: str = "smk-a-1-abc123", command: str = "echo hello", workers: int = 1, **kw) -> dict:
    return build_payload(
        JobRequest(name=name, image="img:1", resource_shape="cpu.small", command=command, workers=workers, **kw)
    )


def poll_until_done(gw: LeptonGateway, job_id: str, fake, timeout: float = 20.0):
    seen = []

    def done():
        status = gw.status(job_id)
        if not seen or seen[-1] != status.state:
            seen.append(status.state)
        return classify(status) is not Outcome.RUNNING

    fake.wait_for(done, timeout=timeout, what=f"end of {job_id}")
    return gw.status(job_id), seen


def test_create_sends_exactly_the_built_spec(fake):
    """POST /jobs carries the built payload unchanged, also fields newer than the SDK (shared_memory_size)."""
    gw = LeptonGateway()
    sent = payload(
        envs=[{"name": "A", "value": "1"}, {"name": "HF_TOKEN", "value_from": {"secret_name_ref": "hf"}}],
        mounts=[{"path": "/x", "mount_path": "/mnt/x", "from": "node-nfs:store"}],
        ttl_seconds_after_finished=60,
        shared_memory_size=65536,
    )
    fake.secrets["hf"] = "hf-secret-value"
    fake.behaviour = "succeed"
    assert gw.create(sent) == "smk-a-1-abc123"
    (post,) = fake.calls("POST", "/jobs")
    assert post.body == sent
    assert "hf-secret-value" not in json.dumps(post.body)


def test_spec_with_wrong_types_is_rejected_by_the_sdk_model(fake):
    """The SDK's LeptonJob model checks known fields before anything is sent."""
    bad = payload()
    bad["spec"]["completions"] = "many"
    with pytest.raises(ConfigError, match="rejected by leptonai"):
        LeptonGateway().create(bad)
    assert not fake.calls("POST")


def test_status_goes_through_queueing_to_completed(fake):
    """States unknown to older SDK models (Queueing) are read as 'still running', then Completed is success."""
    gw = LeptonGateway()
    fake.behaviour = "succeed"
    gw.create(payload())
    status, seen = poll_until_done(gw, "smk-a-1-abc123", fake)
    assert seen == ["Queueing", "Running", "Completed"]
    assert classify(status) is Outcome.SUCCEEDED and status.succeeded == 1
    assert all(r.query.get("job_query_mode") == "alive_and_archive" for r in fake.calls("GET", "/jobs/smk"))


def test_executed_job_fails_with_its_log_lines(fake):
    """A command exiting non-zero ends Failed; the live log holds its output, in order."""
    gw = LeptonGateway()
    gw.create(payload(command="echo line-one; echo line-two >&2; exit 3"))
    status, _ = poll_until_done(gw, "smk-a-1-abc123", fake)
    assert classify(status) is Outcome.FAILED and status.failed == 1
    assert gw.logs("smk-a-1-abc123") == ["line-one", "line-two"]


def test_archived_logs_are_used_when_the_replica_is_gone(fake):
    """Without a live log (pod gone) the lines come from GET /logs, sorted by time although sent newest first."""
    gw = LeptonGateway()
    fake.behaviour, fake.live_logs = "fail", False
    gw.create(payload())
    poll_until_done(gw, "smk-a-1-abc123", fake)
    assert gw.logs("smk-a-1-abc123") == fake.fail_log
    (logs_call,) = fake.calls("GET", "/logs")
    assert logs_call.query == {"job": "smk-a-1-abc123", "replica": "smk-a-1-abc123-0-r0"}


def test_multi_worker_logs_are_prefixed_by_replica(fake):
    """Each worker runs the command with its own LEPTON_JOB_WORKER_INDEX; log lines name their replica."""
    gw = LeptonGateway()
    gw.create(payload(command='echo "rank=$LEPTON_JOB_WORKER_INDEX of $LEPTON_JOB_TOTAL_WORKERS"', workers=2))
    status, _ = poll_until_done(gw, "smk-a-1-abc123", fake)
    assert classify(status) is Outcome.SUCCEEDED and status.succeeded == 2
    (post,) = fake.calls("POST", "/jobs")
    assert (post.body["spec"]["completions"], post.body["spec"]["parallelism"]) == (2, 2)
    assert post.body["spec"]["intra_job_communication"] is True
    assert gw.logs("smk-a-1-abc123") == ["[smk-a-1-abc123-0-r0] rank=0 of 2", "[smk-a-1-abc123-1-r1] rank=1 of 2"]


def test_delete_kills_the_job_and_then_it_is_gone(fake, tmp_path):
    """DELETE stops a running job's process; afterwards GET is 404 (exists=False, a failure) and delete says False."""
    gw = LeptonGateway()
    marker = tmp_path / "still-running"
    gw.create(payload(command=f"sleep 30; touch {marker}"))
    fake.wait_for(lambda: gw.status("smk-a-1-abc123").state == "Running", what="Running")
    assert gw.delete("smk-a-1-abc123") is True
    status = gw.status("smk-a-1-abc123")
    assert status.exists is False and classify(status) is Outcome.FAILED
    assert gw.delete("smk-a-1-abc123") is False
    job = fake.jobs["smk-a-1-abc123"]
    assert all(p.poll() is not None for p in job.procs) and not marker.exists()


def test_node_group_names_resolve_to_ids(fake):
    """A node group may be named by name or id; an unknown one fails with the known names."""
    fake.node_groups = {"ng-7f3a": "h100-pool"}
    gw = LeptonGateway()
    assert gw.node_group_id("h100-pool") == "ng-7f3a"
    assert gw.node_group_id("ng-7f3a") == "ng-7f3a"
    with pytest.raises(ConfigError, match="h100-pool"):
        gw.node_group_id("a100-pool")
    assert len(fake.calls("GET", "/dedicated-node-groups")) == 1  # cached


def test_wrong_token_and_duplicate_ids_are_api_errors(fake, monkeypatch):
    """A 401 and a 409 surface as LeptonAPIError with the HTTP status."""
    fake.behaviour = "hang"
    LeptonGateway().create(payload())
    with pytest.raises(LeptonAPIError) as dup:
        LeptonGateway().create(payload())
    assert dup.value.status == 409
    monkeypatch.setenv("LEPTON_WORKSPACE_TOKEN", "wrong")
    with pytest.raises(LeptonAPIError) as unauthorized:
        LeptonGateway().status("smk-a-1-abc123")
    assert unauthorized.value.status == 401


def test_unreachable_workspace_is_an_api_error(lepton_env):
    """A closed port is reported as unreachable (with the URL), not as a crash."""
    gw = LeptonGateway(url="http://127.0.0.1:9/api/v2/workspaces/ws1", workspace_id="ws1", token="t")
    with pytest.raises(LeptonAPIError, match="not reachable"):
        gw.status("smk-a-1-abc123")


def test_no_workspace_configured_is_a_config_error(lepton_env):
    """Without id, env vars or login record the error says how to log in."""
    with pytest.raises(ConfigError, match="lep login"):
        LeptonGateway()


def test_parse_archived_log_orders_by_timestamp():
    """Loki values of several streams are merged in time order."""
    data = {"data": {"result": [{"values": [["30", "c"], ["10", "a"]]}, {"values": [["20", "b\n"]]}]}}
    assert parse_archived_log(data) == ["a", "b", "c"]
    assert parse_archived_log({}) == [] and parse_archived_log(None) == []


def test_sdk_in_use_is_reported(fake):
    """The gateway names the SDK version and API generation it loaded (v1 for 0.21.x, v2 for 0.4x)."""
    gw = LeptonGateway()
    assert gw.sdk.api in ("v1", "v2") and gw.sdk.version[0].isdigit()
    assert "leptonai" in sys.modules
