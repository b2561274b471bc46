"""The Lepton executor (``executor: lepton``): Snakemake itself submits every rule as a Lepton batch job.

The executor plugin (:mod:`snakemake_executor_plugin_lepton`) reads its settings from the profile and checks them
when Snakemake starts, so nothing is set up here: Snakemake runs on this machine as with the local executor, and
``-b`` starts that Snakemake in the background (it only submits and polls).
"""

from __future__ import annotations

from rlvr.launch import local
from rlvr.launch.request import Launch, RunRequest


def prepare(request: RunRequest) -> Launch:
    """Snakemake with the Lepton profile, run (or detached) on this machine."""
    return local.prepare(request)
