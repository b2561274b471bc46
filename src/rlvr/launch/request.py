"""The hand-over between the CLI and an executor: a resolved :class:`RunRequest` in, a :class:`Launch` out.

``nemotron steps run`` parses its arguments and loads the config into a :class:`RunRequest`; the executor of the
chosen profile (:func:`rlvr.launch.executors.prepare_launch`: local, Slurm or Lepton) checks and sets up what it
needs and returns a :class:`Launch`: the Snakemake command line, its environment, and how ``-b`` detaches it.
The CLI then runs that command attached, detached, or (``-d``) as a dry run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr.launch.profile import Profile
from rlvr.utils.runlock import RunLock
from rlvr.workflow import WorkflowRequest


@dataclass(frozen=True)
class RunRequest:
    """One ``steps run`` after parsing and config loading: what to build, where, with which profile.

    ``cluster`` is the config's ``cluster`` section when the run includes rule rlvr (else ``None``); ``env`` is the
    environment to run Snakemake with (the variables the config's secrets read already marked, see
    :func:`rlvr.launch.secret_env.mark_config_secrets`); ``passthrough``: the arguments meant for Snakemake.
    """

    workflow: WorkflowRequest
    profile: Profile
    run_dir: Path
    run_name: str
    env: dict[str, str]
    passthrough: list[str] = field(default_factory=list)
    cluster: dict[str, Any] | None = None
    dry_run: bool = False
    detach: bool = False
    force_squash: bool = False


@dataclass(frozen=True)
class Detached:
    """A run started with ``-b``: where it writes, and how to follow it."""

    run_dir: Path
    log: Path
    job_id: str
    follow: str | None = None

    def __str__(self) -> str:
        lines = [f"run folder: {self.run_dir}", f"log file: {self.log}", f"job id: {self.job_id}"]
        return "\n".join(lines + ([f"follow it with: {self.follow}"] if self.follow else []))


def _nothing() -> None:
    return None


@dataclass
class Launch:
    """What to run for a request: the Snakemake command (with ``--dry-run`` at ``-d``) and its environment.

    ``detach(lock)`` starts the command in the background (``-b``), hands the run-folder lock over to it and
    returns where it runs. ``cleanup()`` removes what the launch set up for an attached run (a Slurm secrets
    file); after a successful ``detach`` it leaves alone what the detached run still needs.
    """

    argv: list[str]
    env: dict[str, str]
    unlock_argv: list[str]
    detach: Callable[[RunLock], Detached]
    cleanup: Callable[[], None] = _nothing
