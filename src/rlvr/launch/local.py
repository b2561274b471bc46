"""The local executor: Snakemake runs its jobs as processes of this machine; ``-b`` starts it in the background.

Also the launch of any executor that needs nothing set up before Snakemake starts (see
:mod:`rlvr.launch.lepton`): the profile alone tells Snakemake how to submit the jobs.
"""

from __future__ import annotations

import subprocess
import time

from rlvr.launch.request import Detached, Launch, RunRequest
from rlvr.utils.runlock import RunLock
from rlvr.workflow import snakemake_argv


def prepare(request: RunRequest) -> Launch:
    """Snakemake with the request's profile and passthrough arguments, in the request's environment."""
    return launch_with(request, extra=request.passthrough, env=request.env)


def launch_with(request: RunRequest, *, extra: list[str], env: dict[str, str]) -> Launch:
    """The Snakemake command for ``request`` with ``extra`` arguments and ``env``, detached as a local process."""
    profile = request.profile.path
    argv = snakemake_argv(request.workflow, profile=profile, dry_run=request.dry_run, extra=extra)
    return Launch(
        argv=argv,
        env=env,
        unlock_argv=snakemake_argv(request.workflow, profile=profile, extra=["--unlock"]),
        detach=lambda lock: start_detached(argv, request, env, lock),
    )


def start_detached(argv: list[str], request: RunRequest, env: dict[str, str], lock: RunLock) -> Detached:
    """Start Snakemake in a session of its own, its output in ``<run>/logs/controller-<time>.log``."""
    log = request.run_dir / "logs" / f"controller-{time.strftime('%Y%m%d-%H%M%S')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    # The detached Snakemake inherits the run-folder lock's descriptor, so the folder stays locked until it ends.
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            pass_fds=(lock.fd,),
        )
    lock.hand_over(proc.pid)
    return Detached(run_dir=request.run_dir, log=log, job_id=f"local:{proc.pid}")
