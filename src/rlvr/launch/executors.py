"""One launch entry point per executor: the profile's ``executor`` picks the function that prepares the run.

Each entry point takes the resolved :class:`~rlvr.launch.request.RunRequest` and returns the
:class:`~rlvr.launch.request.Launch` to run. An executor not listed here (a Snakemake executor plugin this project
does not ship a profile for) needs nothing before Snakemake starts, so it is launched as the local one is.
"""

from __future__ import annotations

from collections.abc import Callable

from rlvr.launch import lepton, local, slurm
from rlvr.launch.request import Launch, RunRequest

EXECUTORS: dict[str, Callable[[RunRequest], Launch]] = {
    "local": local.prepare,
    "slurm": slurm.prepare,
    "lepton": lepton.prepare,
}


def prepare_launch(request: RunRequest) -> Launch:
    """Check and set up what the profile's executor needs; return the Snakemake command to run."""
    return EXECUTORS.get(request.profile.executor, local.prepare)(request)
