"""From one Snakemake job to one Lepton batch-job spec (``{"metadata": ..., "spec": ...}``), without a server.

Per-rule placement comes from resources, so a profile's ``set-resources`` can send the GPU rule to a GPU
shape and everything else to a CPU shape::

    lepton_resource_shape  lepton_node_group  lepton_image  lepton_num_workers   (string/int resources)
    nodes                  (the rlvr rule's own resource, = cluster.num_nodes) -> workers when
                           lepton_num_workers is not given

Each falls back to the plugin-wide setting of the same name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from rlvr.errors import ConfigError

MAX_JOB_NAME_LEN = 36  # the service's limit on metadata.id


def job_name(prefix: str, rule: str, jobid: int | str, run_tag: str) -> str:
    """A valid, unique Lepton job id: ``<prefix>-<rule>-<jobid>-<run_tag>``, shortened to 36 characters.

    Lepton ids match ``^[a-z][a-z0-9-]*$``, have at most 36 characters, do not end in '-' or 'by-lepton'.
    The rule part is cut first, so the job id and the per-run tag (which keeps two runs apart) survive.
    Group jobs have a UUID as jobid (and the group name as rule): its first 8 hex digits are kept.
    """

    def clean(text: str) -> str:
        return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")

    head, tail = clean(prefix) or "smk", f"{clean(str(jobid))[:8]}-{clean(run_tag)}".strip("-")
    if not head[0].isalpha():
        head = "j" + head
    room = MAX_JOB_NAME_LEN - len(head) - len(tail) - 2
    if room < 0:
        raise ConfigError(
            f"lepton-job-name-prefix '{prefix}' is too long: the job id must fit "
            f"{MAX_JOB_NAME_LEN} characters together with '-{tail}'; use a shorter prefix."
        )
    middle = clean(rule)[:room].strip("-")
    name = "-".join(p for p in (head, middle, tail) if p)
    if name.endswith("by-lepton"):  # reserved suffix; cannot happen with a numeric jobid, kept for safety
        name = name[:-1] + "x"
    return name


def resource(resources: Mapping, key: str, default):
    """``lepton_<key>`` from the job's resources when set and non-empty, else ``default``."""
    value = resources.get(f"lepton_{key}") if hasattr(resources, "get") else None
    return default if value in (None, "") else value


def num_workers(resources: Mapping, default: int) -> int:
    """Workers (= nodes) of the Lepton job: ``lepton_num_workers``, else the rule's ``nodes``, else the default."""
    value = resource(resources, "num_workers", None)
    if value is None:
        value = resources.get("nodes") if hasattr(resources, "get") else None
    value = default if value in (None, "") else value
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise ConfigError(
            f"Lepton workers must be a positive integer, got {value!r} (resource "
            "lepton_num_workers / nodes, or --lepton-num-workers)."
        )
    return count


def shape_gpus(shape: str) -> int | None:
    """GPUs per worker of a resource shape by its name: ``gpu.8xh100-80gb`` 8, ``gpu.h100-sxm`` 1, ``cpu.*`` 0."""
    if shape.startswith("cpu."):
        return 0
    match = re.match(r"^gpu\.(?:(\d+)x)?", shape)
    if not match:
        return None  # a shape naming scheme we do not know: not checked
    return int(match.group(1) or 1)


def check_gpus(rule: str, resources: Mapping, shape: str, workers: int) -> None:
    """A rule's ``gpus`` resource (rlvr: gpus_per_node × num_nodes) must equal what the workers' shape gives.

    Caught here, a mismatch costs nothing; on the cluster it would be a job that waits for GPUs forever or
    leaves most of them idle.
    """
    wanted = resources.get("gpus") if hasattr(resources, "get") else None
    per_worker = shape_gpus(shape)
    if not wanted or per_worker is None:
        return
    if int(wanted) != per_worker * workers:
        raise ConfigError(
            f"Rule {rule} needs {wanted} GPUs (for rlvr: cluster.gpus_per_node x cluster.num_nodes), but "
            f"{workers} worker(s) of shape {shape} have {per_worker * workers}. Choose a shape with "
            f"{int(wanted) // max(workers, 1)} GPUs per worker (resource lepton_resource_shape) or change the "
            "cluster section of the config."
        )


@dataclass(frozen=True)
class JobRequest:
    """Everything one Lepton job needs; ``command`` is a bash script, ``envs``/``mounts`` are API lists."""

    name: str
    image: str
    resource_shape: str
    command: str
    workers: int = 1
    node_group_id: str | None = None
    envs: list[dict] = field(default_factory=list)
    mounts: list[dict] = field(default_factory=list)
    image_pull_secrets: tuple[str, ...] = ()
    shared_memory_size: int | None = None
    max_failure_retry: int | None = None
    ttl_seconds_after_finished: int | None = None


def build_payload(req: JobRequest) -> dict:
    """The ``LeptonJob`` JSON for ``POST /jobs``, leaving out every unset optional field.

    Multi-worker jobs set ``completions = parallelism = workers`` and ``intra_job_communication`` (what
    ``lep job create --num-workers N`` does): all workers start together and can reach each other by name.
    """
    if not req.image:
        raise ConfigError(
            f"No container image for Lepton job {req.name}: set --lepton-image (profile key "
            "lepton-image) or the rule's lepton_image resource."
        )
    if not req.resource_shape:
        raise ConfigError(
            f"No resource shape for Lepton job {req.name}: set --lepton-resource-shape (e.g. "
            "gpu.8xh100-80gb, cpu.small) or the rule's lepton_resource_shape resource."
        )
    spec: dict = {
        "resource_shape": req.resource_shape,
        "container": {"image": req.image, "command": ["/bin/bash", "-c", req.command]},
        "completions": req.workers,
        "parallelism": req.workers,
        "envs": list(req.envs),
        "mounts": list(req.mounts),
    }
    if req.workers > 1:
        spec["intra_job_communication"] = True
    if req.node_group_id:
        spec["affinity"] = {"allowed_dedicated_node_groups": [req.node_group_id]}
    if req.image_pull_secrets:
        spec["image_pull_secrets"] = list(req.image_pull_secrets)
    for key in ("shared_memory_size", "max_failure_retry", "ttl_seconds_after_finished"):
        if getattr(req, key) is not None:
            spec[key] = getattr(req, key)
    return {"metadata": {"id": req.name}, "spec": spec}
