"""One launch entry point per executor: a resolved RunRequest in, the Snakemake command to run out.

Dry runs only: no Slurm controller is contacted, nothing is written or squashed (the real submissions are
tested in tests/slurm and tests/lepton).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rlvr.launch.executors import prepare_launch
from rlvr.launch.profile import Profile, load_profile
from rlvr.launch.request import Detached, RunRequest
from rlvr.launch.topology import TopologyError
from rlvr.workflow import REQUEST_KEY, WorkflowRequest, find_profile


def _request(profile: Profile, tmp_path: Path, **overrides) -> RunRequest:
    fields = dict(
        workflow=WorkflowRequest(step="rl/nemo_rl/rlvr", config="tiny", overrides=["grpo.max_num_steps=2"]),
        profile=profile,
        run_dir=tmp_path / "run",
        run_name="tiny",
        env={"PATH": "/usr/bin", "MARKER": "1"},
        passthrough=["--cores", "2"],
        dry_run=True,
    )
    return RunRequest(**{**fields, **overrides})


@pytest.mark.parametrize("profile_name", ["local", "lepton_rl_nemo_rl_rlvr"])
def test_local_and_lepton_run_snakemake_with_the_profile_as_is(profile_name, tmp_path):
    """The command builds the request's step with the profile and the passthrough, in the request's environment."""
    profile = load_profile(find_profile(profile_name))
    request = _request(profile, tmp_path)
    launch = prepare_launch(request)
    assert launch.argv[launch.argv.index("--profile") + 1] == str(profile.path)
    assert f"{REQUEST_KEY}={request.workflow.to_cli_value()}" in launch.argv
    assert launch.argv[-3:] == ["--dry-run", "--cores", "2"]
    assert launch.env == request.env
    assert launch.unlock_argv[-1] == "--unlock" and "--dry-run" not in launch.unlock_argv
    launch.cleanup()  # nothing to remove
    assert not request.run_dir.exists()


def test_an_executor_without_an_entry_point_is_launched_like_the_local_one(tmp_path):
    profile = load_profile(find_profile("local"))
    other = Profile(
        path=profile.path, options={**profile.options, "executor": "cluster-generic"}, launch=profile.launch
    )
    assert prepare_launch(_request(other, tmp_path)).argv == prepare_launch(_request(profile, tmp_path)).argv


def test_slurm_dry_run_checks_the_topology_and_contacts_no_cluster(tmp_path):
    """-d on Slurm: the profile's rlvr resources against cluster.*, then the plain command (no scontrol on PATH)."""
    profile = load_profile(find_profile("test_slurm"))
    with pytest.raises(TopologyError, match="gpus_per_node"):
        prepare_launch(_request(profile, tmp_path, cluster={"num_nodes": 1, "gpus_per_node": 8}))
    launch = prepare_launch(_request(profile, tmp_path, cluster={"num_nodes": 1, "gpus_per_node": 0}))
    assert launch.argv[-3:] == ["--dry-run", "--cores", "2"] and launch.env["MARKER"] == "1"
    assert not (tmp_path / "run").exists()


def test_detached_run_prints_where_it_runs(tmp_path):
    job = Detached(run_dir=tmp_path, log=tmp_path / "c.log", job_id="slurm:7", follow="squeue -j 7")
    assert (
        str(job)
        == f"run folder: {tmp_path}\nlog file: {tmp_path / 'c.log'}\njob id: slurm:7\nfollow it with: squeue -j 7"
    )
