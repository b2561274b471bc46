"""Errors that are the user's to fix.

A :class:`UserError` is printed as one clear message (no traceback) by the CLI and the stage entry points,
which then exit non-zero. Its text must name the file, line or key at fault and say how to fix it.
"""

from __future__ import annotations


class UserError(Exception):
    """A bad input, config or environment that the user can fix; printed without a traceback."""

    def __init__(self, message: str, *, code: str | None = None):
        # ``code`` is a manifest error name (e.g. ``rollout_batch_not_divisible``) when one applies.
        self.code = code
        super().__init__(f"[{code}] {message}" if code else message)


class ConfigError(UserError):
    """The step config is invalid (unknown key, wrong type, inconsistent values)."""


class DataError(UserError):
    """A training or validation data file is invalid."""


class CheckpointError(UserError):
    """A checkpoint folder is missing, incomplete or of an unsupported kind."""


def describe_os_error(exc: OSError) -> str:
    """One line for an operating-system error: what failed, on which path, and what to do about it."""
    import errno

    path = exc.filename or "?"
    fixes = {
        errno.ENOSPC: "free some space on that file system (or write the run elsewhere with RL_OUTPUT_DIR)",
        errno.EDQUOT: "your disk quota is used up: free some space or write the run elsewhere with RL_OUTPUT_DIR",
        errno.EROFS: "that file system is read-only: write the run elsewhere with RL_OUTPUT_DIR",
        errno.EACCES: "you lack permission there: fix the folder's permissions or write the run elsewhere",
        errno.EPERM: "the operation is not permitted there: fix the permissions or write the run elsewhere",
    }
    fix = fixes.get(exc.errno, "check the path and try again")
    return f"{exc.strerror or exc}: {path}; {fix}"
