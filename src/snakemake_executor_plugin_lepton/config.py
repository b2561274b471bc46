"""The plugin's options, parsed and checked once before the first job is submitted.

Snakemake hands list settings over as raw strings (``NAME=VALUE``, ``PATH:MOUNT_PATH:FROM``) and a profile
cannot express mappings for plugin keys, so every list is parsed here. Each mistake is reported as a
:class:`~rlvr.errors.ConfigError` that names the setting (``lepton-env-vars`` ...) and says how to fix it,
so a typo costs nothing instead of a queued GPU job.

Secret policy: an environment variable whose *name* contains KEY, TOKEN, SECRET, PASSWORD, PASSWD or
CREDENTIAL is never sent by value. It must be mapped to a workspace secret (``lepton-secrets NAME=SECRET``)
and travels as ``value_from: {secret_name_ref: SECRET}``; Lepton resolves it inside the container.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from rlvr.errors import ConfigError

SECRET_NAME_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")

# Set by Lepton inside every job; a user value would be ignored or rejected by the service.
RESERVED_ENV_NAMES = frozenset(
    {
        "LEPTON_WORKSPACE_ID",
        "LEPTON_DEPLOYMENT_NAME",
        "LEPTON_JOB_NAME",
        "LEPTON_RESOURCE_ACCELERATOR_TYPE",
        "LEPTON_WORKSPACE_ORIGIN_URL",
    }
)
# System paths of the container that Lepton refuses as mount targets (exact matches only).
RESERVED_MOUNT_PATHS = frozenset(
    {
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/lib",
        "/lib64",
        "/media",
        "/opt",
        "/proc",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/usr",
        "/usr/bin",
        "/usr/lib",
        "/usr/local",
        "/usr/sbin",
        "/var",
        "/sys/fs/cgroup",
        "/sys/kernel/security",
        "/proc/sys",
        "/proc/bus",
    }
)
_ENV_NAME = re.compile(r"^[A-Za-z_.-][A-Za-z0-9_.-]*$")
# Values shorter than this are too likely to occur by chance (``1``, ``true``) to be searched for.
_MIN_SECRET_VALUE_LEN = 6


_VAR = re.compile(r"\$(?:\$|\{(\w+)\}|(\w+))")


def expand_vars(value: str, where: str, environ: Mapping[str, str]) -> str:
    """Replace ``$VAR``/``${VAR}`` from ``environ`` (``$$`` is a literal ``$``); an unset VAR is an error.

    Snakemake expands scalar profile values itself but leaves unset variables in place, and does not expand
    list items at all; without this, ``$NEMOTRON_WORKSPACE`` would reach Lepton as a literal path.
    """

    def substitute(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(2)
        if name not in environ:
            raise ConfigError(
                f"{where}: '{value}' uses ${name}, which is not set; "
                "export it before running Snakemake, or write the value into the profile."
            )
        return environ[name]

    return _VAR.sub(substitute, value)


def is_secret_name(name: str) -> bool:
    """Whether an env var name marks a credential (``HF_TOKEN``, ``WANDB_API_KEY``, ``AWS_SECRET_ACCESS_KEY``)."""
    upper = name.upper()
    return any(part in upper for part in SECRET_NAME_PARTS)


@dataclass(frozen=True)
class Mount:
    """One Lepton mount: storage ``path`` of volume ``source`` appears at ``mount_path`` in the container."""

    path: str
    mount_path: str
    source: str

    def to_json(self) -> dict:
        return {"path": self.path, "mount_path": self.mount_path, "from": self.source}


@dataclass(frozen=True)
class LeptonOptions:
    """Validated plugin-wide options (per-rule overrides come from ``lepton_*`` resources, see spec.py)."""

    env: Mapping[str, str]  # plain variables, never secret-looking names
    secrets: Mapping[str, str]  # env var name -> workspace secret name
    mounts: tuple[Mount, ...]
    shared_mount: str | None  # container path that is also the same path on the submit host


def _check_env_name(name: str, setting: str, item: str) -> None:
    if not _ENV_NAME.match(name):
        raise ConfigError(
            f"{setting}: '{item}' has an invalid variable name '{name}' (letters, digits, "
            "'_', '.', '-'; not starting with a digit)."
        )
    if name in RESERVED_ENV_NAMES:
        raise ConfigError(
            f"{setting}: '{name}' is set by Lepton itself inside every job; remove it "
            f"(reserved: {', '.join(sorted(RESERVED_ENV_NAMES))})."
        )


def parse_env_vars(items: Iterable[str]) -> dict[str, str]:
    """``["NAME=VALUE", ...]`` -> ``{NAME: VALUE}``; a secret-looking NAME is refused with the fix."""
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"lepton-env-vars: '{item}' is not NAME=VALUE (write e.g. 'HF_HOME=/mnt/data/hf').")
        _check_env_name(name, "lepton-env-vars", item)
        if is_secret_name(name):
            raise ConfigError(
                f"lepton-env-vars: '{name}' looks like a secret (its name contains one of "
                f"{', '.join(SECRET_NAME_PARTS)}), so its value must not be written into the job spec. Store it "
                f"as a workspace secret (`lep secret create -n {name} -v ...`) and list it under "
                f"lepton-secrets as '{name}={name}' instead."
            )
        env[name] = value
    return env


def parse_secrets(items: Iterable[str]) -> dict[str, str]:
    """``["NAME=SECRET_NAME", "NAME"]`` -> ``{NAME: SECRET_NAME}`` (a bare NAME refers to a secret of that name)."""
    secrets: dict[str, str] = {}
    for item in items:
        name, sep, secret = item.partition("=")
        secret = secret if sep else name
        _check_env_name(name, "lepton-secrets", item)
        if not secret:
            raise ConfigError(f"lepton-secrets: '{item}' names no workspace secret (write NAME=SECRET_NAME).")
        secrets[name] = secret
    return secrets


def parse_mounts(items: Iterable[str]) -> tuple[Mount, ...]:
    """``["PATH:MOUNT_PATH:FROM", ...]`` as in ``lep job create --mount``; FROM may itself hold ':'."""
    mounts = []
    for item in items:
        parts = item.split(":", 2)
        if len(parts) != 3 or not all(parts):
            raise ConfigError(
                f"lepton-mounts: '{item}' is not PATH:MOUNT_PATH:FROM (write e.g. "
                "'/shared/rlvr:/mnt/shared:node-nfs:my-storage')."
            )
        path, mount_path, source = parts
        if not mount_path.startswith("/"):
            raise ConfigError(f"lepton-mounts: mount path '{mount_path}' in '{item}' must be absolute.")
        normalized = "/" + posixpath.normpath(mount_path).lstrip("/")
        if normalized in RESERVED_MOUNT_PATHS:
            raise ConfigError(
                f"lepton-mounts: '{mount_path}' is a system path Lepton refuses as a mount "
                "target; mount below it instead (e.g. '/mnt/shared')."
            )
        mounts.append(Mount(path, normalized, source))
    return tuple(mounts)


def parse_options(
    env_vars: Iterable[str], secrets: Iterable[str], mounts: Iterable[str], shared_mount: str | None
) -> LeptonOptions:
    """Parse the list settings and check that ``shared_mount`` is one of the configured mount paths."""
    parsed_mounts = parse_mounts(mounts)
    if shared_mount:
        shared_mount = "/" + posixpath.normpath(shared_mount).lstrip("/")
        if not any(m.mount_path == shared_mount for m in parsed_mounts):
            known = ", ".join(m.mount_path for m in parsed_mounts) or "none"
            raise ConfigError(
                f"lepton-shared-mount '{shared_mount}' is not the MOUNT_PATH of any entry of "
                f"lepton-mounts (configured mount paths: {known}); add the mount or fix the path."
            )
    return LeptonOptions(parse_env_vars(env_vars), parse_secrets(secrets), parsed_mounts, shared_mount or None)


def check_storage(options: LeptonOptions, workdir: str, shared_io: bool) -> None:
    """Refuse a run whose jobs could not see their inputs and outputs.

    Lepton containers do not share the submit host's disk. Files reach them either through a shared mount
    seen at the same path on both sides (``shared_io`` and ``lepton-shared-mount``), or through a Snakemake
    storage plugin (``--shared-fs-usage none`` with ``--default-storage-provider``; Snakemake itself then
    insists on the provider and prefix).
    """
    if not shared_io:
        return
    if options.shared_mount is None:
        raise ConfigError(
            "Lepton jobs cannot see this machine's disk, but Snakemake assumes a shared filesystem for inputs "
            "and outputs. Either (a) run from a folder on storage that the jobs mount at the same path: "
            "--lepton-mounts PATH:MOUNT_PATH:FROM --lepton-shared-mount MOUNT_PATH (see docs/lepton.md), or "
            "(b) use a storage plugin: --shared-fs-usage none --default-storage-provider s3 "
            "--default-storage-prefix s3://BUCKET/PREFIX."
        )
    real = os.path.realpath(workdir)
    if real != options.shared_mount and not real.startswith(options.shared_mount.rstrip("/") + "/"):
        raise ConfigError(
            f"The working directory {real} is not under lepton-shared-mount {options.shared_mount}, so the "
            "jobs would not find it. Run Snakemake from inside the shared mount (the same path the containers "
            "mount), or use a storage plugin (--shared-fs-usage none --default-storage-provider ...)."
        )


def job_envs(options: LeptonOptions, declared: Mapping[str, str]) -> list[dict]:
    """The ``spec.envs`` list: plain values, then secret references; never a secret-looking value.

    ``declared`` are the variables Snakemake wants forwarded (the workflow's ``envvars:``, ``--envvars`` and
    storage plugin credentials) with their local values. A secret-looking one must be mapped with
    ``lepton-secrets``: its local value is dropped and only the reference is sent.
    """
    plain: dict[str, str] = {}
    unmapped = []
    for name, value in declared.items():
        if name in options.secrets:
            continue
        if is_secret_name(name):
            unmapped.append(name)
        else:
            plain[name] = value
    if unmapped:
        pairs = " ".join(f"{n}={n}" for n in sorted(unmapped))
        raise ConfigError(
            f"The workflow forwards {', '.join(sorted(unmapped))} to its jobs, and these look like secrets, "
            "whose values are never written into a Lepton job spec. Create workspace secrets "
            f"(`lep secret create -n NAME -v ...`) and map them: --lepton-secrets {pairs}"
        )
    plain.update(options.env)
    envs = [{"name": n, "value": v} for n, v in sorted(plain.items()) if n not in options.secrets]
    envs += [{"name": n, "value_from": {"secret_name_ref": s}} for n, s in sorted(options.secrets.items())]
    return envs


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """Local values of secret-looking variables, longest first (so redaction never leaves a suffix)."""
    values = {v for k, v in environ.items() if is_secret_name(k) and len(v) >= _MIN_SECRET_VALUE_LEN}
    return sorted(values, key=len, reverse=True)


def leaked_secret_names(text: str, environ: Mapping[str, str]) -> list[str]:
    """Names of secret-looking variables whose local value appears verbatim in ``text`` (a job spec)."""
    return sorted(k for k, v in environ.items() if is_secret_name(k) and len(v) >= _MIN_SECRET_VALUE_LEN and v in text)


def redact(text: str, environ: Mapping[str, str]) -> str:
    """Replace local secret values in fetched job logs by ``***`` before they are printed or saved."""
    for value in secret_values(environ):
        text = text.replace(value, "***")
    return text
