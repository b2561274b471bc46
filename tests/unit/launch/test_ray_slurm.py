"""The Ray launcher's commands for a multi-node allocation, and its checks before anything starts.

Only one node exists here, so the multi-node plan is checked command by command; the launcher's Ray path itself
runs for real on the single-node Slurm of tests/slurm.
"""

from __future__ import annotations

import sys

import pytest

from rlvr.errors import UserError
from rlvr.launch.ray_slurm import Container, RayPlan, build_plan, launch, main
from rlvr.launch.topology import Allocation, TopologyError

ALLOC = Allocation(job_id="99", num_nodes=3, gpus_per_node=8, nodes=("dgx01", "dgx02", "dgx03"))
STAGE = [sys.executable, "-m", "rlvr.stages", "rlvr", "--run-dir", "results/x"]


def test_plan_places_head_then_one_worker_per_other_node():
    """Head on the first node with the port; each worker joins head_ip:port; every task pinned with --overlap."""
    plan = RayPlan(allocation=ALLOC, head_ip="10.0.0.1", port=6400, cpus_per_node=128, python="/py")
    task = ["srun", "--overlap", "--nodes=1", "--ntasks=1", "--mem=0"]
    head = plan.head_command()
    assert head[:5] == task[:4] + ["--nodelist=dgx01"]
    assert "--gpus-per-node=8" in head
    assert head[head.index("/py") :] == [
        "/py",
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--node-ip-address=10.0.0.1",
        "--port=6400",
        "--include-dashboard=false",
        "--num-gpus=8",
        "--disable-usage-stats",
        "--block",
        "--num-cpus=128",
    ]
    workers = plan.worker_commands()
    assert [w[4] for w in workers] == ["--nodelist=dgx02", "--nodelist=dgx03"]
    assert all("--address=10.0.0.1:6400" in w and "--head" not in w for w in workers)
    assert plan.probe_command(60)[-5:] == ["rlvr.launch.ray_slurm", "probe", "10.0.0.1:6400", "3", "60"]
    assert plan.stage_command(STAGE) == STAGE  # no container: the stage runs right here, on the head


def test_container_wraps_every_task_and_swaps_the_interpreter():
    """With an image, each srun gets pyxis flags and the host interpreter becomes the container's."""
    box = Container(image="/sq/nemo_rl.sqsh", mounts=("/lustre:/lustre", "/w:/w"), workdir="/w", python="python3")
    plan = RayPlan(allocation=ALLOC, head_ip="10.0.0.1", port=6379, cpus_per_node=None, container=box)
    flags = ["--container-image=/sq/nemo_rl.sqsh", "--container-mounts=/lustre:/lustre,/w:/w", "--container-workdir=/w"]
    stage = plan.stage_command(STAGE)
    assert stage[stage.index(flags[0]) :] == [*flags, "python3", *STAGE[1:]]
    assert stage[:2] == ["srun", "--overlap"] and "--nodelist=dgx01" in stage
    assert all(set(flags) <= set(w) and w[w.index(flags[-1]) + 1] == "python3" for w in plan.worker_commands())


def test_container_and_cpus_come_from_the_job_environment():
    env = {"RLVR_CONTAINER_IMAGE": "/a.sqsh", "RLVR_CONTAINER_MOUNTS": "/x:/x,/y:/y", "SLURM_CPUS_ON_NODE": "64"}
    plan = build_plan(Allocation(job_id="1", num_nodes=1, gpus_per_node=0, nodes=("localhost",)), env, port=7000)
    assert plan.address == "127.0.0.1:7000" and plan.cpus_per_node == 64
    assert plan.container == Container(image="/a.sqsh", mounts=("/x:/x", "/y:/y"))


def test_outside_slurm_one_node_just_runs_the_stage(tmp_path):
    """No SLURM_JOB_ID and one node: the command runs as it is and its exit code comes back."""
    out = tmp_path / "ran"
    code = launch(
        1,
        0,
        [sys.executable, "-c", f"open({str(out)!r}, 'w').write('ok'); raise SystemExit(3)"],
        env={"PATH": "/usr/bin:/bin"},
    )
    assert code == 3 and out.read_text() == "ok"


def test_outside_slurm_several_nodes_is_an_error():
    with pytest.raises(UserError, match="cluster.num_nodes=2 needs a Slurm allocation of 2 nodes"):
        launch(2, 8, ["true"], env={})


def test_wrong_allocation_stops_before_anything_runs(tmp_path):
    """A 1-node allocation for cluster.num_nodes=2 fails the topology check; the stage never starts."""
    out = tmp_path / "ran"
    env = {"SLURM_JOB_ID": "5", "SLURM_JOB_NUM_NODES": "1", "SLURM_JOB_NODELIST": "localhost"}
    with pytest.raises(TopologyError, match="cluster.num_nodes=2 but Slurm job 5 has 1 node"):
        launch(2, 0, ["touch", str(out)], env=env)
    assert not out.exists()


def test_main_prints_user_errors_and_exits_2(capsys, monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert main(["run", "--num-nodes", "4", "--gpus-per-node", "8", "--", "true"]) == 2
    assert "error: cluster.num_nodes=4 needs a Slurm allocation" in capsys.readouterr().err


def test_a_ray_task_that_dies_ends_the_wait_at_once():
    """If `ray start` exits before the cluster is complete, the launcher stops waiting (no 10-minute hang)."""
    import subprocess
    import time

    from rlvr.launch.ray_slurm import _wait_for_cluster

    class SlowProbe(RayPlan):
        def probe_command(self, timeout_s):
            return ["sleep", "60"]

    plan = SlowProbe(allocation=ALLOC, head_ip="10.0.0.1", port=6400, cpus_per_node=None)
    head = subprocess.Popen(["sh", "-c", "exit 7"])
    started = time.monotonic()
    assert _wait_for_cluster(plan, [head], {"PATH": "/usr/bin:/bin"}, timeout_s=60) is False
    assert time.monotonic() - started < 10


def test_every_ray_task_gets_one_auth_token():
    """Head, workers, probe and stage share one token through the environment (not ~/.ray/auth_token, which a
    head under srun and an earlier local ray.init need not agree on); a user's own token is kept."""
    from rlvr.launch.ray_slurm import cluster_auth_env

    env = cluster_auth_env({"PATH": "/bin"})
    assert env["RAY_AUTH_MODE"] == "token" and len(env["RAY_AUTH_TOKEN"]) == 64 and env["PATH"] == "/bin"
    assert cluster_auth_env({})["RAY_AUTH_TOKEN"] != env["RAY_AUTH_TOKEN"]  # fresh per cluster
    assert cluster_auth_env({"RAY_AUTH_TOKEN": "mine"})["RAY_AUTH_TOKEN"] == "mine"
