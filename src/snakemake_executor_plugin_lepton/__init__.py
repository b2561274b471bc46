"""Snakemake executor plugin ``lepton``: every Snakemake job becomes one DGX Cloud Lepton batch job.

Snakemake finds this package by its name (``snakemake_executor_plugin_<name>``, via pkgutil) and reads
``Executor``, ``common_settings`` and ``ExecutorSettings`` from it; ``--executor lepton`` selects it and each
settings field becomes ``--lepton-<field>`` (profile key ``lepton-<field>``).

A job's life: ``run_job`` builds the spec (image, resource shape, node group, workers, env vars, secret
references, mounts; spec.py) around ``format_job_exec(job)`` (topology.py), submits it (gateway.py) and
registers it; ``check_active_jobs`` polls with back-off (polling.py), reports success, or failure with the
tail of the job's logs (also saved under ``.snakemake/lepton_logs/``); ``cancel_jobs`` deletes the jobs
when Snakemake is interrupted. Files reach the jobs through a shared mount or a storage plugin (config.py).
"""

# No `from __future__ import annotations` here: Snakemake reads the ExecutorSettings field types at runtime
# to build the command-line options.
import dataclasses
import json
import os
import uuid
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import CommonSettings, ExecutorSettingsBase, SharedFSUsage

from rlvr.errors import ConfigError
from rlvr.utils.atomic import atomic_file

from .config import check_storage, expand_vars, job_envs, leaked_secret_names, parse_options, redact
from .gateway import LeptonAPIError, LeptonGateway
from .polling import Backoff, Outcome, classify
from .spec import JobRequest, build_payload, check_gpus, job_name, num_workers, resource
from .topology import job_script

# Consecutive failed status queries after which a job is given up (the service may be down for minutes).
MAX_STATUS_ERRORS = 20
ERROR_LOG_LINES = 25  # lines of the job's log quoted in Snakemake's error message


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    """Settings of ``--executor lepton`` (CLI ``--lepton-<name>``, profile key ``lepton-<name>``)."""

    workspace_url: Optional[str] = field(
        default=None,
        metadata=_help(
            "Workspace API URL. Default: LEPTON_WORKSPACE_URL, else the `lep login` record, else the public "
            "gateway URL of the workspace id."
        ),
    )
    workspace_id: Optional[str] = field(
        default=None, metadata=_help("Workspace id. Default: LEPTON_WORKSPACE_ID, else the `lep login` record.")
    )
    token_env: str = field(
        default="LEPTON_WORKSPACE_TOKEN",
        metadata=_help(
            "Name of the environment variable holding the workspace token (the token itself is never a setting). "
            "If that variable is unset, the `lep login` record is used."
        ),
    )
    image: Optional[str] = field(
        default=None,
        metadata=_help(
            "Container image of the jobs; it must contain Python with snakemake and this project installed. "
            "Per rule: resource lepton_image."
        ),
    )
    resource_shape: Optional[str] = field(
        default=None,
        metadata=_help(
            "Resource shape of each worker, e.g. gpu.8xh100-80gb or cpu.small. Per rule: lepton_resource_shape."
        ),
    )
    node_group: Optional[str] = field(
        default=None, metadata=_help("Dedicated node group (name or id) the jobs run on. Per rule: lepton_node_group.")
    )
    num_workers: int = field(
        default=1, metadata=_help("Workers (nodes) per job when the rule sets neither lepton_num_workers nor nodes.")
    )
    env_vars: list[str] = field(
        default_factory=list,
        metadata=_help(
            "Plain environment variables as NAME=VALUE. Secret-looking names (KEY, TOKEN, SECRET, PASSWORD, "
            "CREDENTIAL) are refused: use --lepton-secrets.",
            nargs="+",
        ),
    )
    secrets: list[str] = field(
        default_factory=list,
        metadata=_help(
            "Environment variables taken from workspace secrets, as NAME=SECRET_NAME (or NAME for a secret of the "
            "same name). Only the reference is sent.",
            nargs="+",
        ),
    )
    forward_env: list[str] = field(
        default_factory=list,
        metadata=_help(
            "Names of variables whose values on this machine are copied into every job when set (e.g. "
            "RL_OUTPUT_DIR: the job must resolve the same config and paths as the submitting Snakemake).",
            nargs="+",
        ),
    )
    mounts: list[str] = field(
        default_factory=list,
        metadata=_help(
            "Storage mounts as PATH:MOUNT_PATH:FROM, e.g. /rlvr:/mnt/shared:node-nfs:my-storage.", nargs="+"
        ),
    )
    shared_mount: Optional[str] = field(
        default=None,
        metadata=_help(
            "MOUNT_PATH of the mount that this machine sees at the same path; Snakemake must run inside it. "
            "Without it, a storage plugin is required (--shared-fs-usage none --default-storage-provider ...)."
        ),
    )
    remote_workdir: str = field(
        default="/tmp/snakemake-workdir",
        metadata=_help("Working folder inside the job when running with a storage plugin (no shared mount)."),
    )
    python_executable: str = field(
        default="python", metadata=_help("Python interpreter inside the image that has snakemake installed.")
    )
    image_pull_secrets: list[str] = field(
        default_factory=list, metadata=_help("Workspace registry secrets used to pull a private image.", nargs="+")
    )
    shared_memory_size: Optional[int] = field(
        default=None,
        metadata=_help("Shared memory (/dev/shm) of each worker in MiB (NCCL and Ray need several GiB on GPU nodes)."),
    )
    max_failure_retry: Optional[int] = field(
        default=None,
        metadata=_help(
            "Lepton's retries of a failed worker. Default: the service's; Snakemake's --retries also applies."
        ),
    )
    ttl_seconds_after_finished: int = field(
        default=3600, metadata=_help("Seconds a finished job (and its logs) is kept by Lepton.")
    )
    job_name_prefix: str = field(
        default="smk",
        metadata=_help("Prefix of the Lepton job ids (<prefix>-<rule>-<jobid>-<run tag>, at most 36 characters)."),
    )
    poll_seconds: float = field(default=10.0, metadata=_help("First pause between status polls, seconds."))
    poll_max_seconds: float = field(default=120.0, metadata=_help("Longest pause between status polls."))
    poll_backoff: float = field(
        default=1.5, metadata=_help("Factor by which the pause grows after each poll in which no job changed state.")
    )
    log_lines: int = field(
        default=200, metadata=_help("Log lines fetched from a failed job (saved under .snakemake/lepton_logs/).")
    )
    multi_worker_template: Optional[str] = field(
        default=None,
        metadata=_help(
            "File with the launcher for multi-worker jobs (placeholders @EXEC_JOB@, @NUM_WORKERS@, @PYTHON@, "
            "@RAY_PORT@, @JOIN_TIMEOUT@, @WORKER_POLL@). Default: Ray head on worker 0, the others join."
        ),
    )
    ray_port: int = field(default=6379, metadata=_help("Port of the Ray head in multi-worker jobs."))
    worker_join_timeout: int = field(
        default=1200,
        metadata=_help("Seconds the Ray head waits for all workers (and workers for the head) before failing."),
    )


common_settings = CommonSettings(
    non_local_exec=True,
    # Shared storage is possible (a mount seen at the same path); without it, Executor.__post_init__ insists
    # on a storage plugin, and Snakemake deploys the sources through it (job_deploy_sources).
    implies_no_shared_fs=False,
    job_deploy_sources=True,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    # Env vars travel in the job spec (secrets as references), never in the command line.
    pass_envvar_declarations_to_cmd=False,
    # The image must already hold the storage plugin: pip-installing it in every job is slow and needs egress.
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=1,
)


def expanded(settings: ExecutorSettings, environ: Mapping[str, str]) -> ExecutorSettings:
    """The settings with ``$VAR`` expanded in every string and list item (see config.expand_vars)."""
    changes = {}
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        where = f"lepton-{f.name.replace('_', '-')}"
        if isinstance(value, str):
            changes[f.name] = expand_vars(value, where, environ)
        elif isinstance(value, list):
            changes[f.name] = [expand_vars(str(item), where, environ) for item in value]
    return dataclasses.replace(settings, **changes)


class Executor(RemoteExecutor):
    """One Lepton batch job per Snakemake job (or group job)."""

    def __post_init__(self):
        shared_io = SharedFSUsage.INPUT_OUTPUT in self.workflow.storage_settings.shared_fs_usage
        try:
            self.settings = s = expanded(self.workflow.executor_settings, os.environ)
            self.options = parse_options(s.env_vars, s.secrets, s.mounts, s.shared_mount)
            check_storage(self.options, str(self.workflow.workdir_init), shared_io)
            self.template = Path(s.multi_worker_template).read_text() if s.multi_worker_template else None
            self.gateway = LeptonGateway(
                url=s.workspace_url, workspace_id=s.workspace_id, token=os.environ.get(s.token_env)
            )
            self.backoff = Backoff(s.poll_seconds, s.poll_max_seconds, s.poll_backoff)
        except (ConfigError, OSError, ValueError) as e:
            raise WorkflowError(f"Lepton executor: {e}") from e
        self.shared_io = shared_io
        # Every submitted job until it ends: Snakemake's status loop takes its jobs out of ``active_jobs`` while
        # it polls them, so a Ctrl-C during a poll handed cancel_jobs an empty list and left the job running.
        self.live_jobs: dict[str, SubmittedJobInfo] = {}
        self.run_tag = uuid.uuid4().hex[:6]
        self.log_dir = Path(".snakemake", "lepton_logs")
        self.next_seconds_between_status_checks = s.poll_seconds
        self.logger.info(
            f"Lepton: workspace {self.gateway.url} (leptonai {self.gateway.sdk.version}, "
            f"API {self.gateway.sdk.api}); run tag {self.run_tag}"
        )

    def get_python_executable(self) -> str:
        return self.settings.python_executable

    def placement(self, job: JobExecutorInterface, key: str, default: str | None) -> str:
        """Resource ``lepton_<key>`` of the job, else the setting; ``$VARS`` expanded here because Snakemake
        leaves profile ``set-resources`` values as written."""
        value = str(resource(job.resources, key, default) or "")
        return expand_vars(value, f"{job.name}: resource lepton_{key}", os.environ)

    def job_payload(self, job: JobExecutorInterface) -> dict:
        """The Lepton job spec of one Snakemake job (ConfigError when the settings do not allow one)."""
        s = self.settings
        res = job.resources
        workers = num_workers(res, s.num_workers)
        workdir = str(self.workflow.workdir_init) if self.shared_io else s.remote_workdir
        command = job_script(
            self.format_job_exec(job),
            workdir=workdir,
            create_workdir=not self.shared_io,
            num_workers=workers,
            template=self.template,
            python=s.python_executable,
            ray_port=s.ray_port,
            join_timeout_s=s.worker_join_timeout,
        )
        shape = self.placement(job, "resource_shape", s.resource_shape)
        image = self.placement(job, "image", s.image)
        node_group = self.placement(job, "node_group", s.node_group)
        check_gpus(job.name, res, shape, workers)
        request = JobRequest(
            name=job_name(s.job_name_prefix, job.name, job.jobid, self.run_tag),
            image=image,
            resource_shape=shape,
            command=command,
            workers=workers,
            node_group_id=self.gateway.node_group_id(node_group) if node_group else None,
            envs=job_envs(
                self.options, {**{n: os.environ[n] for n in s.forward_env if n in os.environ}, **self.envvars()}
            ),
            mounts=[m.to_json() for m in self.options.mounts],
            image_pull_secrets=tuple(s.image_pull_secrets),
            shared_memory_size=s.shared_memory_size,
            max_failure_retry=s.max_failure_retry,
            ttl_seconds_after_finished=s.ttl_seconds_after_finished,
        )
        payload = build_payload(request)
        leaked = leaked_secret_names(json.dumps(payload), os.environ)
        if leaked:
            raise ConfigError(
                f"The Lepton job spec of {job.name} would contain the value of {', '.join(leaked)} "
                "(from this machine's environment). Secrets must travel as workspace secret "
                "references: remove the value from the config/command line and use --lepton-secrets."
            )
        return payload

    def run_job(self, job: JobExecutorInterface):
        try:
            payload = self.job_payload(job)
        except (ConfigError, LeptonAPIError) as e:
            raise WorkflowError(f"Lepton executor: {e}") from e
        job_id = payload["metadata"]["id"]
        try:
            job_id = self.gateway.create(payload)
        except ConfigError as e:
            raise WorkflowError(f"Lepton executor: {e}") from e
        except LeptonAPIError as e:
            self.report_job_error(SubmittedJobInfo(job), msg=f"Submitting Lepton job {job_id} failed: {e}")
            return
        self.logger.info(f"Submitted {job.name} (Snakemake job {job.jobid}) as Lepton job {job_id}")
        info = SubmittedJobInfo(job, external_jobid=job_id, aux={"state": "", "errors": 0})
        self.live_jobs[job_id] = info
        self.report_job_submission(info)

    async def check_active_jobs(self, active_jobs: list[SubmittedJobInfo]) -> AsyncGenerator[SubmittedJobInfo, None]:
        # Snakemake's polling thread starts before __post_init__ has run, and an exception here would end it
        # for good (the run would then wait forever): nothing to do without jobs, and any failed query is
        # retried rather than raised.
        if not active_jobs:
            return
        changed = False
        for info in active_jobs:
            async with self.status_rate_limiter:
                try:
                    status = self.gateway.status(info.external_jobid)
                except Exception as e:  # noqa: BLE001 - see above; LeptonAPIError in all expected cases
                    info.aux["errors"] += 1
                    if info.aux["errors"] >= MAX_STATUS_ERRORS:
                        self.report_job_error(
                            info,
                            msg=f"Lost track of Lepton job {info.external_jobid} after "
                            f"{MAX_STATUS_ERRORS} failed status queries: {e}",
                        )
                        changed = True
                        continue
                    self.logger.warning(f"{e} (attempt {info.aux['errors']}; will retry)")
                    yield info
                    continue
            info.aux["errors"] = 0
            outcome = classify(status)
            if outcome is Outcome.RUNNING:
                if status.state != info.aux["state"]:
                    self.logger.debug(f"Lepton job {info.external_jobid}: {status.state}")
                    info.aux["state"] = status.state
                    changed = True
                yield info
            elif outcome is Outcome.SUCCEEDED:
                self.live_jobs.pop(info.external_jobid, None)
                self.report_job_success(info)
                changed = True
            else:
                self.live_jobs.pop(info.external_jobid, None)
                self.report_failure(info, status.state if status.exists else "gone (HTTP 404)")
                changed = True
        self.next_seconds_between_status_checks = self.backoff.next(changed)

    def report_failure(self, info: SubmittedJobInfo, state: str) -> None:
        """Report a failed job with the tail of its logs in the message and all fetched lines in a file."""
        try:
            lines = self.gateway.logs(info.external_jobid, max_lines=self.settings.log_lines)
        except Exception as e:  # noqa: BLE001 - the failure must be reported even without its logs
            lines = [f"(logs unavailable: {e})"]
        text = redact("\n".join(lines), os.environ)
        log_file = self.log_dir / info.job.name / f"{info.external_jobid}.log"
        aux_logs = []
        try:
            with atomic_file(log_file) as fh:
                fh.write(text + "\n")
            aux_logs.append(str(log_file))
        except OSError as e:
            self.logger.warning(f"Could not save the log of Lepton job {info.external_jobid}: {e}")
        tail = "\n".join(text.splitlines()[-ERROR_LOG_LINES:]) or "(no log lines available)"
        msg = f"Lepton job {info.external_jobid} ended in state {state}. Last log lines:\n{tail}\n"
        self.report_job_error(info, msg=msg, aux_logs=aux_logs)

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]):
        """Delete every still-active Lepton job (Ctrl-C, --keep-going off after a failure, ...), including one the
        status loop held while Snakemake was interrupted (see ``live_jobs``)."""
        pending = {info.external_jobid: info for info in active_jobs}
        pending.update(getattr(self, "live_jobs", {}))
        for info in pending.values():
            try:
                gone = not self.gateway.delete(info.external_jobid)
            except LeptonAPIError as e:
                self.logger.error(
                    f"Could not cancel Lepton job {info.external_jobid}: {e}; delete it in the "
                    "Lepton dashboard or with `lep job remove` (-n in leptonai 0.21, -i in 0.4x)"
                )
                continue
            self.logger.info(f"Cancelled Lepton job {info.external_jobid}" + (" (already gone)" if gone else ""))
