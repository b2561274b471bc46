"""Secrets for Slurm jobs without putting them in what Slurm stores: a 0600 file sourced by the rules' bash.

``sbatch --export=ALL`` (what the Slurm plugin submits with) copies the whole environment into the job's record in
the controller's state directory, and the in-job executor logs ``os.environ`` at debug level. So on Slurm every
variable whose name marks a secret (KEY, TOKEN, SECRET, PASSWORD, PASSWD, CREDENTIAL) is written to
``<run>/.slurm/secrets-<id>.env`` (directory 0700, file 0600, on the shared filesystem), ``BASH_ENV`` points at
that file, and the Slurm client wrappers (:func:`rlvr.launch.slurm.client_wrappers`) unset the secrets before
``sbatch``/``salloc`` submit. Jobs therefore start without them; non-interactive bash sources
``$BASH_ENV`` on start, and Snakemake runs every ``shell:`` rule with bash, so each stage process sees its
secrets again. The job scripts run under ``/bin/sh``, which ignores ``BASH_ENV``. The Snakemake controller keeps
them (the Snakefile resolves ``${oc.env:...}`` references). The file is deleted when the run ends (``-r``: by the
CLI; ``-b``: by the controller job's exit trap).
"""

from __future__ import annotations

import os
import re
import shlex
import uuid
from pathlib import Path

from rlvr.config.secrets import is_secret_name

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_SECRETS_FILE = "RLVR_ENV_FILE"  # (a name without SECRET in it: it must survive the scrubbing)


def secret_names(env: dict[str, str]) -> list[str]:
    return sorted(k for k in env if is_secret_name(k))


def write_secrets_file(env: dict[str, str], folder: Path) -> tuple[dict[str, str], Path | None]:
    """``env`` plus ``BASH_ENV``/``RLVR_ENV_FILE`` naming a new 0600 file that exports its secrets.

    Returns the environment unchanged and ``None`` when there is no secret. A ``BASH_ENV`` the user had already
    set is sourced first from the new file, so it keeps working.
    """
    names = secret_names(env)
    if not names:
        return env, None
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    path = folder / f"secrets-{uuid.uuid4().hex[:12]}.env"
    lines = ["# rlvr: secrets of one run, sourced by bash through BASH_ENV; deleted when the run ends"]
    if env.get("BASH_ENV"):
        lines.append(f". {shlex.quote(env['BASH_ENV'])}")
    # bash can only export identifiers; a secret with another name is dropped from jobs altogether.
    lines += [f"export {name}={shlex.quote(env[name])}" for name in names if _IDENTIFIER.fullmatch(name)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return {**env, "BASH_ENV": str(path), ENV_SECRETS_FILE: str(path)}, path


def without_secrets(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not is_secret_name(k)}
