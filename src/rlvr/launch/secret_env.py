"""Secrets for Slurm jobs without putting them in what Slurm stores: a 0600 file sourced by the rules' bash.

``sbatch --export=ALL`` (what the Slurm plugin submits with) copies the whole environment into the job's record in
the controller's state directory, and the in-job executor logs ``os.environ`` at debug level. So on Slurm every
variable whose name marks a secret (KEY, TOKEN, SECRET, PASSWORD, PASSWD, CREDENTIAL) is written to
``<run>/.slurm/secrets-<id>.env`` (directory 0700, file 0600, on the shared filesystem), ``BASH_ENV`` points at
that file, and the Slurm client wrappers (:func:`rlvr.launch.slurm.client_wrappers`) unset the secrets before
``sbatch``/``salloc`` submit. Jobs therefore start without them; non-interactive bash sources
``$BASH_ENV`` on start, and Snakemake runs every ``shell:`` rule with bash, so each stage process sees its
secrets again. The job scripts run under ``/bin/sh``, which ignores ``BASH_ENV``. The Snakemake controller keeps
them (the Snakefile resolves ``${oc.env:...}`` references), and the Snakemake of a rule job reads the file back
into its own process (:func:`restore_from_secrets_file`, from the Snakefile) so that it resolves the same config.
The file is deleted when the run ends (``-r``: by the CLI; ``-b``: by the controller job's exit trap).

Secrets are also the variables that the config's secrets read (``other: ${oc.env:MY_VAR}`` makes ``MY_VAR`` one,
whatever its name): the CLI lists them in ``RLVR_CONFIG_ENV_REFS`` (:func:`mark_config_secrets`).
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
CONFIG_ENV_REFS = "RLVR_CONFIG_ENV_REFS"  # comma-separated variables read by the config's secrets (idem)


def secret_names(env: dict[str, str]) -> list[str]:
    """Variables kept out of job records: secret-looking names, and the variables the config's secrets read."""
    from_config = {name for name in env.get(CONFIG_ENV_REFS, "").split(",") if name}
    return sorted(k for k in env if is_secret_name(k) or k in from_config)


def mark_config_secrets(env: dict[str, str], names: list[str]) -> dict[str, str]:
    """``env`` naming the variables that the config's secrets read, so the launchers treat them as secrets."""
    return {**env, CONFIG_ENV_REFS: ",".join(sorted(set(names)))} if names else env


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
    names = set(secret_names(env))
    return {k: v for k, v in env.items() if k not in names}


def restore_from_secrets_file(environ: dict[str, str] | None = None) -> list[str]:
    """Put the secrets of ``$RLVR_ENV_FILE`` back into ``environ`` (default ``os.environ``) where missing.

    A rule job on Slurm starts without its secrets (see above) but its Snakemake loads the config, which may read
    them; this process-local copy never reaches Slurm. Returns the names restored.
    """
    environ = os.environ if environ is None else environ
    path = environ.get(ENV_SECRETS_FILE)
    if not path or not Path(path).is_file():
        return []
    restored = []
    for line in Path(path).read_text().splitlines():
        if not line.startswith("export "):
            continue  # the comment, and the user's own BASH_ENV sourced first
        name, _, value = shlex.split(line[len("export ") :])[0].partition("=")
        if name not in environ:
            environ[name] = value
            restored.append(name)
    return restored
