"""The rlvr job's launcher: check the allocation, start Ray across its nodes, run the stage, stop Ray.

``python -m rlvr.launch.ray_slurm run --num-nodes N --gpus-per-node G -- <stage command...>``

* Outside Slurm (no ``SLURM_JOB_ID``) a single-node run just executes the stage; ``N > 1`` is an error, since
  several nodes only exist inside an allocation.
* Inside Slurm the allocation is checked first (:func:`rlvr.launch.topology.check_topology`): nodes and GPUs per
  node must equal ``cluster.*``, or the job stops at once with both numbers.
* With ``N > 1`` (or ``--ray always``) a Ray cluster is started: the head on the first node of the allocation,
  one worker per other node, each an ``srun --overlap`` task pinned to its node (``ray start --block``, so that
  ending the task ends Ray there). The launcher waits until all ``N`` nodes have joined, exports
  ``RAY_ADDRESS=<head ip>:<port>`` and runs the stage on the head node; Ray is stopped whatever the outcome.
* When the CLI configured a container (``RLVR_CONTAINER_IMAGE``, a ``.sqsh`` file), every task runs in it
  through pyxis (``--container-image``/``--container-mounts``/``--container-workdir``), and the stage's host
  interpreter is replaced by the container's (``RLVR_CONTAINER_PYTHON``).

The rule must run this in the job's batch step (profile resource ``mpi: srun`` for rule rlvr), where the whole
allocation is visible; the plugin's default single-task ``srun`` would confine it to one node.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rlvr.errors import UserError
from rlvr.launch.lifeline import call_tied, popen_tied
from rlvr.launch.topology import Allocation, allocation_from_env, check_topology

ENV_IMAGE = "RLVR_CONTAINER_IMAGE"
ENV_MOUNTS = "RLVR_CONTAINER_MOUNTS"
ENV_WORKDIR = "RLVR_CONTAINER_WORKDIR"
ENV_PYTHON = "RLVR_CONTAINER_PYTHON"
DEFAULT_PORT = 6379


@dataclass(frozen=True)
class Container:
    """pyxis flags for every task of the job."""

    image: str
    mounts: tuple[str, ...] = ()
    workdir: str | None = None
    python: str = "python"

    def srun_flags(self) -> list[str]:
        flags = [f"--container-image={self.image}"]
        flags += [f"--container-mounts={','.join(self.mounts)}"] if self.mounts else []
        flags += [f"--container-workdir={self.workdir}"] if self.workdir else []
        return flags

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Container | None:
        if not env.get(ENV_IMAGE):
            return None
        mounts = tuple(m for m in env.get(ENV_MOUNTS, "").split(",") if m)
        return cls(
            image=env[ENV_IMAGE],
            mounts=mounts,
            workdir=env.get(ENV_WORKDIR) or None,
            python=env.get(ENV_PYTHON) or "python",
        )


@dataclass(frozen=True)
class RayPlan:
    """Every command of one launch: where the head and workers run, and how the stage reaches them."""

    allocation: Allocation
    head_ip: str
    port: int
    cpus_per_node: int | None
    container: Container | None = None
    python: str = sys.executable

    @property
    def address(self) -> str:
        return f"{self.head_ip}:{self.port}"

    @property
    def head(self) -> str:
        return self.allocation.nodes[0]

    @property
    def workers(self) -> tuple[str, ...]:
        return self.allocation.nodes[1:]

    def _python(self) -> str:
        return self.container.python if self.container else self.python

    def task_prefix(self, node: str) -> list[str]:
        """One task on ``node``, sharing the allocation with the other tasks (``--overlap``), all its memory."""
        gpus = self.allocation.gpus_per_node
        prefix = [
            "srun",
            "--overlap",
            "--nodes=1",
            "--ntasks=1",
            f"--nodelist={node}",
            "--mem=0",
            f"--job-name=rlvr-ray-{node}",
        ]
        prefix += [f"--gpus-per-node={gpus}"] if gpus else []
        return prefix + (self.container.srun_flags() if self.container else [])

    def _ray_start(self, *role: str) -> list[str]:
        cmd = [
            self._python(),
            "-m",
            "ray.scripts.scripts",
            "start",
            *role,
            f"--num-gpus={self.allocation.gpus_per_node}",
            "--disable-usage-stats",
            "--block",
        ]
        return cmd + ([f"--num-cpus={self.cpus_per_node}"] if self.cpus_per_node else [])

    def head_command(self) -> list[str]:
        return self.task_prefix(self.head) + self._ray_start(
            "--head", f"--node-ip-address={self.head_ip}", f"--port={self.port}", "--include-dashboard=false"
        )

    def worker_commands(self) -> list[list[str]]:
        return [self.task_prefix(node) + self._ray_start(f"--address={self.address}") for node in self.workers]

    def probe_command(self, timeout_s: float) -> list[str]:
        """Waits (on the head, in the container when there is one) until every node has joined."""
        return self.task_prefix(self.head) + [
            self._python(),
            "-m",
            "rlvr.launch.ray_slurm",
            "probe",
            self.address,
            str(self.allocation.num_nodes),
            str(timeout_s),
        ]

    def stage_command(self, cmd: Sequence[str]) -> list[str]:
        """The stage on the head node; in a container, with the container's interpreter for the host's."""
        if not self.container:
            return list(cmd)
        cmd = list(cmd)
        if cmd and cmd[0] == sys.executable:
            cmd[0] = self.container.python
        return self.task_prefix(self.head) + cmd


def build_plan(allocation: Allocation, env: Mapping[str, str], port: int = DEFAULT_PORT) -> RayPlan:
    head_ip = socket.gethostbyname(allocation.nodes[0]) if allocation.nodes else "127.0.0.1"
    cpus = env.get("SLURM_CPUS_ON_NODE")
    return RayPlan(
        allocation=allocation,
        head_ip=head_ip,
        port=port,
        cpus_per_node=int(cpus) if cpus else None,
        container=Container.from_env(env),
    )


def _stop(procs: list[subprocess.Popen], grace_s: float = 30) -> None:
    """End the Ray tasks: srun forwards SIGTERM to ``ray start --block``, which stops Ray on its node."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_cluster(plan: RayPlan, procs: list[subprocess.Popen], env: Mapping[str, str], timeout_s: float) -> bool:
    """Run the probe; give up at once if a ``ray start`` task ends first (a port in use, a bad image)."""
    probe = subprocess.Popen(plan.probe_command(timeout_s), env=dict(env), stdin=subprocess.DEVNULL)
    while probe.poll() is None:
        ended = [p for p in procs if p.poll() is not None]
        if ended:
            _stop([probe], grace_s=5)
            print(
                f"[ray_slurm] error: `{' '.join(ended[0].args)}` exited with {ended[0].returncode} before the Ray "
                "cluster was complete; see its output above",
                file=sys.stderr,
                flush=True,
            )
            return False
        time.sleep(1)
    if probe.returncode != 0:
        print(
            f"[ray_slurm] error: the Ray cluster did not reach {plan.allocation.num_nodes} node(s) within "
            f"{timeout_s:.0f} s; see the ray start output above",
            file=sys.stderr,
            flush=True,
        )
    return probe.returncode == 0


def cluster_auth_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` plus one Ray auth token for the whole cluster (the user's ``RAY_AUTH_TOKEN``, else a fresh one).

    Ray >= 2.59 authenticates with a token and, without one in the environment, each process falls back to
    ``~/.ray/auth_token``, which a head started under srun and a driver need not share (a stale file left by an
    earlier local ``ray.init`` made the probe fail with InvalidAuthToken). Handing every task the same token
    through the environment makes head, workers, probe and stage agree; srun passes it in memory, so it never
    appears in a job script.
    """
    token = env.get("RAY_AUTH_TOKEN") or secrets.token_hex(32)
    return {**env, "RAY_AUTH_MODE": env.get("RAY_AUTH_MODE") or "token", "RAY_AUTH_TOKEN": token}


def run_with_ray(plan: RayPlan, cmd: Sequence[str], env: Mapping[str, str], timeout_s: float) -> int:
    """Start head and workers, wait for all nodes, run ``cmd`` with ``RAY_ADDRESS``; always stop Ray."""
    env = cluster_auth_env(env)
    print(f"[ray_slurm] head {plan.head} ({plan.address}), workers: {', '.join(plan.workers) or 'none'}", flush=True)
    procs = [popen_tied(plan.head_command(), env, stdin=subprocess.DEVNULL)]
    try:
        procs += [popen_tied(c, env, stdin=subprocess.DEVNULL) for c in plan.worker_commands()]
        if not _wait_for_cluster(plan, procs, env, timeout_s):
            return 3
        return call_tied(plan.stage_command(cmd), {**env, "RAY_ADDRESS": plan.address})
    finally:
        _stop(procs)


def launch(
    num_nodes: int,
    gpus_per_node: int,
    cmd: Sequence[str],
    *,
    ray: str = "auto",
    env: Mapping[str, str] | None = None,
    port: int = DEFAULT_PORT,
    timeout_s: float = 600,
) -> int:
    """Run ``cmd`` as the rlvr stage of a ``num_nodes`` × ``gpus_per_node`` job; returns its exit code."""
    env = dict(os.environ if env is None else env)
    allocation = allocation_from_env(env)
    if allocation is None:
        if num_nodes > 1:
            raise UserError(
                f"cluster.num_nodes={num_nodes} needs a Slurm allocation of {num_nodes} nodes; run "
                "with a Slurm profile (-r/-b slurm_rl_nemo_rl_rlvr) or set cluster.num_nodes=1"
            )
        if ray == "always":
            raise UserError("--ray always needs a Slurm allocation")
        return call_tied(cmd, env)
    check_topology(num_nodes, gpus_per_node, allocation)
    plan = build_plan(allocation, env, port)
    if ray == "always" or (ray == "auto" and num_nodes > 1):
        return run_with_ray(plan, cmd, env, timeout_s)
    return call_tied(plan.stage_command(cmd), env)


def probe(address: str, want_nodes: int, timeout_s: float) -> int:
    """Poll the Ray cluster at ``address`` until ``want_nodes`` nodes are alive (exit 0) or time runs out (1)."""
    import ray

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            break
        except Exception:  # the head is not up yet: ray raises ConnectionError or RuntimeError by version
            time.sleep(1)
    else:
        return 1
    try:
        while time.monotonic() < deadline:
            alive = [n for n in ray.nodes() if n.get("Alive")]
            if len(alive) >= want_nodes:
                print(
                    f"[ray_slurm] Ray cluster ready: {len(alive)} node(s), resources {ray.cluster_resources()}",
                    flush=True,
                )
                return 0
            time.sleep(1)
        return 1
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rlvr.launch.ray_slurm",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="check the allocation, start Ray when needed, run the stage command")
    run.add_argument("--num-nodes", type=int, required=True, help="cluster.num_nodes")
    run.add_argument("--gpus-per-node", type=int, required=True, help="cluster.gpus_per_node")
    run.add_argument(
        "--ray", choices=("auto", "always", "never"), default="auto", help="auto: Ray only for more than one node"
    )
    run.add_argument("--port", type=int, default=int(os.environ.get("RLVR_RAY_PORT", DEFAULT_PORT)))
    run.add_argument("--timeout", type=float, default=600, help="seconds to wait for every node to join")
    run.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the stage command")
    pr = sub.add_parser("probe", help="wait until a Ray cluster has N nodes (used by `run`)")
    pr.add_argument("address")
    pr.add_argument("nodes", type=int)
    pr.add_argument("timeout", type=float)
    args = parser.parse_args(argv)
    if args.action == "probe":
        return probe(args.address, args.nodes, args.timeout)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("give the stage command after --")
    try:
        return launch(args.num_nodes, args.gpus_per_node, cmd, ray=args.ray, port=args.port, timeout_s=args.timeout)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
