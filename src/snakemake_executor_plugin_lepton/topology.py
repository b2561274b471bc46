"""The bash script a Lepton job runs: the Snakemake job itself, and for multi-worker jobs a Ray cluster first.

Single worker: ``cd <workdir> && <snakemake job>``.

Multi-worker (a rule with ``nodes > 1``, e.g. rlvr with ``cluster.num_nodes = 2``): every worker of a Lepton
job runs the same command, and Lepton tells each one who it is through environment variables (DGX Cloud
Lepton, "predefined environment variables" of batch jobs):

=============================  =====================================================
``LEPTON_JOB_WORKER_INDEX``    rank of this worker, 0 .. N-1
``LEPTON_JOB_TOTAL_WORKERS``   N
``LEPTON_JOB_NAME``            the job id
``LEPTON_JOB_SERVICE_PREFIX``  host name prefix of the workers (falls back to the job id)
``LEPTON_SUBDOMAIN``           the job's DNS subdomain (falls back to ``<job>-job-svc``)
=============================  =====================================================

Worker ``i`` is reachable as ``$LEPTON_JOB_SERVICE_PREFIX-i.$LEPTON_SUBDOMAIN``. The default template puts
the Ray head on worker 0, waits (bounded) until all N workers joined, runs the Snakemake job there with
``RAY_ADDRESS`` exported (so the trainer's ``ray.init()`` attaches to this cluster), then stops Ray; the
other workers join, stay while the head answers ``ray status`` and exit 0 once it is gone, so the Lepton job
completes exactly when the head's Snakemake job does. Another launcher can be given as a template file
(``lepton-multi-worker-template``) using the same ``@PLACEHOLDERS@`` (plain text replacement, so shell
``${...}`` needs no escaping).
"""

from __future__ import annotations

import shlex

RAY_TEMPLATE = r"""
RANK="${LEPTON_JOB_WORKER_INDEX:-0}"
HEAD_HOST="${LEPTON_JOB_SERVICE_PREFIX:-$LEPTON_JOB_NAME}-0.${LEPTON_SUBDOMAIN:-$LEPTON_JOB_NAME-job-svc}"
export RAY_ADDRESS="$HEAD_HOST:@RAY_PORT@"
if [ "$RANK" = "0" ]; then
  ray start --head --port=@RAY_PORT@ --disable-usage-stats || exit 1
  if ! @PYTHON@ - <<'WAIT_FOR_WORKERS'
import sys, time
import ray
want, deadline = @NUM_WORKERS@, time.time() + @JOIN_TIMEOUT@
ray.init()
while sum(1 for n in ray.nodes() if n.get("Alive")) < want:
    if time.time() > deadline:
        sys.exit("Lepton: not all @NUM_WORKERS@ workers joined the Ray cluster within @JOIN_TIMEOUT@ s")
    time.sleep(2)
ray.shutdown()
WAIT_FOR_WORKERS
  then
    ray stop --force
    exit 1
  fi
  ( @EXEC_JOB@ )
  rc=$?
  ray stop --force
  exit $rc
else
  deadline=$(( $(date +%s) + @JOIN_TIMEOUT@ ))
  until ray start --address="$RAY_ADDRESS" --disable-usage-stats; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "Lepton worker $RANK: Ray head $RAY_ADDRESS not reachable within @JOIN_TIMEOUT@ s" >&2
      exit 1
    fi
    sleep @WORKER_POLL@
  done
  while ray status --address="$RAY_ADDRESS" >/dev/null 2>&1; do sleep @WORKER_POLL@; done
  ray stop --force
  exit 0
fi
"""


def render(
    template: str,
    *,
    exec_job: str,
    num_workers: int,
    python: str,
    ray_port: int = 6379,
    join_timeout_s: int = 1200,
    worker_poll_s: float = 15,
) -> str:
    """Fill the ``@PLACEHOLDERS@`` of a multi-worker template; ``@EXEC_JOB@`` is mandatory."""
    if "@EXEC_JOB@" not in template:
        raise ValueError("a multi-worker template must contain @EXEC_JOB@ (where the Snakemake job runs)")
    values = {
        "@EXEC_JOB@": exec_job,
        "@NUM_WORKERS@": str(num_workers),
        "@PYTHON@": python,
        "@RAY_PORT@": str(ray_port),
        "@JOIN_TIMEOUT@": str(join_timeout_s),
        "@WORKER_POLL@": str(worker_poll_s),
    }
    # @EXEC_JOB@ last: the Snakemake command line must never be searched for placeholders itself.
    for key in sorted(values, key=lambda k: k == "@EXEC_JOB@"):
        template = template.replace(key, values[key])
    return template


def job_script(
    exec_job: str,
    *,
    workdir: str,
    create_workdir: bool,
    num_workers: int,
    template: str | None = None,
    python: str = "python",
    ray_port: int = 6379,
    join_timeout_s: int = 1200,
    worker_poll_s: float = 15,
) -> str:
    """The ``bash -c`` script of one Lepton job: enter the work folder, then run the job (or the launcher)."""
    cd = f"cd {shlex.quote(workdir)}"
    if create_workdir:  # storage-plugin mode: Snakemake deploys the sources into an empty folder
        cd = f"mkdir -p {shlex.quote(workdir)} && {cd}"
    if num_workers <= 1:
        return f"{cd} && {exec_job}"
    body = render(
        template or RAY_TEMPLATE,
        exec_job=exec_job,
        num_workers=num_workers,
        python=python,
        ray_port=ray_port,
        join_timeout_s=join_timeout_s,
        worker_poll_s=worker_poll_s,
    )
    return f"{cd} || exit 1\n{body.strip()}\n"
