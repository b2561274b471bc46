"""Running the workflow on Slurm: pre-flight guards, the rlvr topology check, and the detached controller job.

:func:`prepare` is the Slurm executor's launch entry point; it runs every step below in order.

Two traps make snakemake-executor-plugin-slurm hang or fail on a working cluster; both are avoided here, before
anything is submitted:

1. **No accounting, yet ``sacct`` is installed.** The plugin then polls with ``sacct``, which fails on every call
   ("accounting storage is disabled"); after 5 failures the job is silently dropped and Snakemake waits forever,
   ignoring SIGTERM. :func:`status_command_args` reads ``scontrol show config``: with
   ``accounting_storage/none`` it makes the plugin poll with ``squeue`` (an error if the profile insists on
   ``sacct``), and it checks that ``MinJobAge`` keeps finished jobs visible to ``squeue`` long enough, below
   which the plugin falls back to ``sacct`` on its own.
2. **``SLURM_CONF`` is lost.** The plugin's in-job executor (slurm-jobstep) strips every ``SLURM_*`` variable
   before its nested ``srun``, and the plugin itself strips them when the controller runs inside a Slurm job
   (``-b``). A cluster whose config is not at the compiled-in ``/etc/slurm/slurm.conf`` then fails every rule.
   :func:`client_wrappers` writes tiny wrappers of the Slurm client commands that restore ``SLURM_CONF``, and puts
   them first in ``PATH``, which nobody strips.

Secrets (env vars named like ``*KEY*``, ``*TOKEN*``, ...) never reach a job script, a job's recorded
environment, a printed config or a log: see :mod:`rlvr.launch.secret_env`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from rlvr.errors import UserError
from rlvr.launch.profile import ControllerSettings, Profile
from rlvr.launch.request import Detached, Launch, RunRequest

SYSTEM_SLURM_CONF = Path("/etc/slurm/slurm.conf")
CLIENT_COMMANDS = ("sbatch", "srun", "salloc", "squeue", "scancel", "scontrol", "sinfo", "sacct")
# The plugin's default first wait before polling, in seconds (ExecutorSettings.init_seconds_before_status_checks).
PLUGIN_INIT_SECONDS = 40


@dataclass(frozen=True)
class SlurmConfig:
    """The two controller settings the status-polling guard needs (from ``scontrol show config``)."""

    accounting: str
    min_job_age_s: int

    @property
    def has_accounting(self) -> bool:
        return not self.accounting.endswith("/none")


def parse_scontrol_config(text: str) -> SlurmConfig:
    """``AccountingStorageType = accounting_storage/none`` and ``MinJobAge = 300 sec`` from ``scontrol show config``."""
    values = dict(re.findall(r"^(\w+)\s*=\s*(.*?)\s*$", text, flags=re.MULTILINE))
    if "AccountingStorageType" not in values:
        raise UserError("`scontrol show config` printed no AccountingStorageType; is this a Slurm controller?")
    age = re.match(r"(\d+)", values.get("MinJobAge", "300"))
    return SlurmConfig(accounting=values["AccountingStorageType"], min_job_age_s=int(age.group(1)) if age else 300)


def query_slurm_config(env: dict[str, str]) -> SlurmConfig:
    """Ask the controller; an unreachable controller is a clear error before anything is submitted."""
    if not shutil.which("scontrol", path=env.get("PATH")):
        raise UserError(
            "the profile's executor is slurm but `scontrol` is not on PATH: run on a Slurm login node "
            "(or install slurm-client), or choose a local profile"
        )
    proc = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, env=env, timeout=60)
    if proc.returncode:
        raise UserError(
            f"cannot reach the Slurm controller (`scontrol show config` exit {proc.returncode}): "
            f"{proc.stderr.strip()[-500:]}. Check SLURM_CONF or /etc/slurm/slurm.conf."
        )
    return parse_scontrol_config(proc.stdout)


def _option(options: dict, name: str, argv: list[str]):
    """A Snakemake option from the passthrough (``--name value`` / ``--name=value``), else from the profile."""
    flag = f"--{name}"
    for i, tok in enumerate(argv):
        if tok == flag and i + 1 < len(argv):
            return argv[i + 1]
        if tok.startswith(flag + "="):
            return tok.split("=", 1)[1]
    return options.get(name)


def status_command_args(profile: Profile, slurm: SlurmConfig, passthrough: list[str]) -> list[str]:
    """Extra Snakemake arguments that keep the plugin's job polling working on this cluster (trap 1)."""
    chosen = _option(profile.options, "slurm-status-command", passthrough)
    init_s = int(
        _option(profile.options, "slurm-init-seconds-before-status-checks", passthrough) or PLUGIN_INIT_SECONDS
    )
    if chosen == "sacct" and not slurm.has_accounting:
        raise UserError(
            f"{profile.config_file}: slurm-status-command is sacct, but this cluster has no accounting "
            f"({slurm.accounting}), so every sacct poll fails and Snakemake waits forever. "
            "Use slurm-status-command: squeue."
        )
    uses_squeue = chosen == "squeue" or (chosen is None and not slurm.has_accounting)
    if uses_squeue and slurm.min_job_age_s < 3 * init_s and not slurm.has_accounting:
        raise UserError(
            f"MinJobAge={slurm.min_job_age_s}s of this cluster is below 3 × "
            f"slurm-init-seconds-before-status-checks ({init_s}s): the plugin would fall back to sacct, "
            f"which fails without accounting, and hang. Lower slurm-init-seconds-before-status-checks "
            f"in {profile.config_file} to at most {slurm.min_job_age_s // 3}."
        )
    if chosen is None and not slurm.has_accounting:
        return ["--slurm-status-command", "squeue"]
    return []


def _needs_conf(conf: str | None) -> bool:
    return bool(conf) and not (SYSTEM_SLURM_CONF.exists() and Path(conf).resolve() == SYSTEM_SLURM_CONF.resolve())


def client_wrappers(bin_dir: Path, env: dict[str, str], unset: list[str] = ()) -> dict[str, str]:
    """``env`` with ``PATH`` led by wrappers of the Slurm clients that restore ``SLURM_CONF`` (trap 2) and drop
    the variables in ``unset`` (the secrets) from what ``sbatch``/``salloc`` submit: slurmctld keeps a batch
    job's environment in its state files, while an ``srun`` step's environment goes to the nodes only.

    Nothing to do when ``SLURM_CONF`` is unset or the system file and there is nothing to unset.
    """
    conf = env.get("SLURM_CONF")
    if not _needs_conf(conf) and not unset:
        return env
    bin_dir = bin_dir.resolve()
    bin_dir.mkdir(parents=True, exist_ok=True)
    search = env.get("PATH", os.defpath)
    for name in CLIENT_COMMANDS:
        real = shutil.which(name, path=search)
        if real is None or Path(real).parent == bin_dir:
            continue
        lines = ["#!/bin/sh", "# written by nemotron steps run (rlvr.launch.slurm.client_wrappers)"]
        if _needs_conf(conf):
            lines += [
                "# the Slurm plugins drop SLURM_CONF from the environment of nested calls",
                f'[ -n "$SLURM_CONF" ] || SLURM_CONF={shlex.quote(conf)}',
                "export SLURM_CONF",
            ]
        # `env -u` rather than `unset`: it takes any name, where a bad one would abort sh's special builtin.
        drop = [f"-u {shlex.quote(n)}" for n in unset] if name in ("sbatch", "salloc") else []
        if drop:
            lines.append("# secrets stay out of the job record; jobs get them back from $BASH_ENV (secret_env)")
        lines.append(" ".join(["exec", *(["env", *drop] if drop else []), shlex.quote(real), '"$@"']))
        (bin_dir / name).write_text("\n".join(lines) + "\n")
        (bin_dir / name).chmod(0o755)
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{search}"}


@dataclass
class ControllerJob:
    """The ``-b`` Snakemake controller as a Slurm batch job: its script, log and submission command."""

    argv: list[str]
    run_dir: Path
    settings: ControllerSettings
    name: str
    secrets_file: Path | None = None
    stamp: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S"))

    @property
    def log(self) -> Path:
        return (self.run_dir / "logs" / f"controller-{self.stamp}.log").resolve()

    @property
    def script_path(self) -> Path:
        return (self.run_dir / "logs" / f"controller-{self.stamp}.sbatch").resolve()

    def script(self) -> str:
        """The batch script: the Snakemake command line; secrets come from their 0600 file, never from here."""
        lines = [
            "#!/bin/sh",
            "# rlvr detached controller: Snakemake submits the rule jobs from here and waits.",
            f"cd {shlex.quote(os.getcwd())}",
        ]
        if self.secrets_file:
            quoted = shlex.quote(str(self.secrets_file))
            lines += [f". {quoted}", f"trap 'rm -f {quoted}' EXIT", "trap 'exit 143' TERM INT"]
        return "\n".join([*lines, shlex.join(self.argv)]) + "\n"

    def sbatch_argv(self) -> list[str]:
        s = self.settings
        argv = [
            "sbatch",
            "--parsable",
            f"--job-name={self.name}",
            f"--output={self.log}",
            "--export=ALL",
            f"--chdir={os.getcwd()}",
            "--nodes=1",
            "--ntasks=1",
            f"--cpus-per-task={s.cpus}",
            f"--mem={s.mem_mb}",
            f"--time={s.time}",
        ]
        argv += [f"--partition={s.partition}"] if s.partition else []
        argv += [f"--account={s.account}"] if s.account else []
        return argv + list(s.extra) + [str(self.script_path)]

    def submit(self, env: dict[str, str]) -> str:
        """Write the script, ``sbatch`` it (with no secret in its environment), return the job id."""
        from rlvr.launch.secret_env import without_secrets
        from rlvr.utils.atomic import atomic_file

        self.log.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.script_path) as fh:
            fh.write(self.script())
        self.script_path.chmod(0o755)
        proc = subprocess.run(self.sbatch_argv(), capture_output=True, text=True, env=without_secrets(env), timeout=120)
        if proc.returncode:
            raise UserError(
                f"sbatch of the controller job failed (exit {proc.returncode}): "
                f"{proc.stderr.strip()[-1000:]}\n  command: {shlex.join(self.sbatch_argv())}"
            )
        return proc.stdout.strip().split(";")[0]


def container_env(profile: Profile, run_dir: Path, *, force_squash: bool, env: dict[str, str]) -> dict[str, str]:
    """Squash the profile's image (or reuse its ``.sqsh``) and hand it to the rlvr launcher through ``env``."""
    from rlvr.launch import ray_slurm, squash

    container = profile.launch.container
    if not container.image:
        return env
    squash_dir = Path(profile.launch.squash.dir or (Path.cwd() / ".sqsh")).expanduser()
    sqsh = squash.ensure_squashed(
        container.image, squash_dir, force=force_squash, launcher=squash.import_launcher(profile.launch.squash)
    )
    # The job sees the same paths as here: the working directory is mounted at itself.
    mounts = [*container.mounts, f"{Path.cwd()}:{Path.cwd()}"]
    return {
        **env,
        ray_slurm.ENV_IMAGE: str(sqsh),
        ray_slurm.ENV_MOUNTS: ",".join(mounts),
        ray_slurm.ENV_WORKDIR: container.workdir or str(Path.cwd()),
        ray_slurm.ENV_PYTHON: container.python,
    }


def prepare(request: RunRequest) -> Launch:
    """Everything checked and set up before Snakemake starts on Slurm, in this order:

    1. the profile's resources for rule rlvr against ``cluster.*`` (also at ``-d``, which contacts no cluster,
       writes nothing and squashes nothing);
    2. the status-polling guard (trap 1), from the controller's ``scontrol show config``;
    3. the container image squashed (or its ``.sqsh`` reused) and handed to the rlvr launcher;
    4. the client wrappers (trap 2), which also keep the secrets out of what ``sbatch`` submits;
    5. the secrets file the jobs source (:mod:`rlvr.launch.secret_env`), removed by :attr:`Launch.cleanup` after
       an attached run and by the controller job after a detached one.
    """
    from rlvr.launch import local
    from rlvr.launch.secret_env import secret_names, write_secrets_file
    from rlvr.launch.topology import check_profile_topology

    profile = request.profile
    if request.cluster is not None:
        check_profile_topology(profile.rule_resources("rlvr"), request.cluster, str(profile.config_file))
    if request.dry_run:
        return local.launch_with(request, extra=request.passthrough, env=request.env)
    env = request.env
    extra = status_command_args(profile, query_slurm_config(env), request.passthrough)
    env = container_env(profile, request.run_dir, force_squash=request.force_squash, env=env)
    env = client_wrappers(request.run_dir / ".slurm" / "bin", env, unset=secret_names(env))
    env, secrets_file = write_secrets_file(env, request.run_dir / ".slurm")
    launch = local.launch_with(request, extra=request.passthrough + extra, env=env)
    secrets = _SecretsFile(secrets_file)
    # -b submits the controller as a batch job (not a local process); the secrets file goes with it.
    return replace(launch, detach=lambda _lock: submit_controller(launch, request, secrets), cleanup=secrets.remove)


@dataclass
class _SecretsFile:
    """The run's secrets file: removed at the end of an attached run; a detached controller job removes it."""

    path: Path | None
    handed_over: bool = False

    def remove(self) -> None:
        if self.path and not self.handed_over:
            self.path.unlink(missing_ok=True)


def submit_controller(launch: Launch, request: RunRequest, secrets: _SecretsFile) -> Detached:
    """``-b`` on Slurm: the Snakemake controller becomes a batch job of its own; return once it is queued.

    The run-folder lock is not handed over: the controller job runs on another node and may start later.
    """
    job = ControllerJob(
        argv=launch.argv,
        run_dir=request.run_dir,
        settings=request.profile.launch.controller,
        name=f"rlvr-{request.run_name}-controller",
        secrets_file=secrets.path,
    )
    job_id = job.submit(launch.env)
    secrets.handed_over = True
    return Detached(
        run_dir=request.run_dir,
        log=job.log,
        job_id=f"slurm:{job_id}",
        follow=f"squeue -j {job_id}; tail -f {job.log}",
    )
