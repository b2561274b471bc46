"""Secrets: recognised by key name, never written or printed, only ever read from the environment.

A key whose name contains KEY, TOKEN, SECRET, PASSWORD, PASSWD or CREDENTIAL is a secret (the Nemotron rule).
Its value must come from an environment variable (``${oc.env:VAR}``) so that configs, job scripts, command lines
and logs can carry the *reference* and never the value; a literal secret in a config file is an error.
"""

from __future__ import annotations

import re
from typing import Any

from rlvr.errors import ConfigError

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
REDACTED = "******"
_ENV_REFERENCE = re.compile(r"^\$\{oc\.env:[^}]+\}$")


def is_secret_name(name: str) -> bool:
    return bool(SECRET_NAME.search(str(name)))


def redact(value: Any) -> Any:
    """A deep copy of ``value`` with every secret-named key's value replaced by ``******``."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_name(k) and v not in (None, "") else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def check_no_literal_secrets(unresolved: Any, path: tuple = ()) -> None:
    """Refuse secret-named keys whose value is written literally instead of ``${oc.env:VAR}``."""
    if isinstance(unresolved, dict):
        for key, val in unresolved.items():
            sub = (*path, str(key))
            if is_secret_name(key) and isinstance(val, str) and val and not _ENV_REFERENCE.match(val):
                raise ConfigError(
                    f"'{'.'.join(sub)}' holds a literal secret; export it in an environment variable and write "
                    f"'{key}: ${{oc.env:YOUR_VAR}}' so it never lands in a config, a job script or a log")
            check_no_literal_secrets(val, sub)
    elif isinstance(unresolved, list):
        for i, val in enumerate(unresolved):
            check_no_literal_secrets(val, (*path, str(i)))


def with_secret_references(resolved: Any, unresolved: Any) -> Any:
    """The resolved config with each secret value put back to its ``${oc.env:...}`` reference.

    This is the form handed to stage processes (on their command line): they resolve the reference from their
    own environment, so the value never appears in a command line, a job script or a log.
    """
    if isinstance(resolved, dict) and isinstance(unresolved, dict):
        out = {}
        for key, val in resolved.items():
            ref = unresolved.get(key)
            if is_secret_name(key) and isinstance(ref, str) and _ENV_REFERENCE.match(ref):
                out[key] = ref
            else:
                out[key] = with_secret_references(val, ref)
        return out
    if isinstance(resolved, list) and isinstance(unresolved, list) and len(resolved) == len(unresolved):
        return [with_secret_references(a, b) for a, b in zip(resolved, unresolved)]
    return resolved
