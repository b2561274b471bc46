"""What a Lepton job state means for Snakemake, and how often to ask.

States reported by the service (``status.state``): Starting, Running, Failed, Completed, Stopped, Stopping,
Deleting, Deleted, Restarting, Archived, Queueing, Awaiting, PendingRetry, Terminating; anything else is
treated as "not finished yet". A job is

* done when ``Completed`` (or ``Archived`` with every worker succeeded),
* failed when ``Failed``, ``Stopped``, ``Deleted`` (or ``Archived`` otherwise, or gone: HTTP 404),
* still running in every other state, including the transitional Stopping/Deleting/Terminating, which end
  in one of the final states above.

Back-off: the pause between polls starts at ``initial`` seconds and grows by ``factor`` after every poll in
which no job changed state, up to ``maximum``; any change resets it, so a fast rule is noticed quickly and a
long training job costs few API calls.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


@dataclass(frozen=True)
class JobStatus:
    """The part of ``GET /jobs/{id}`` the plugin needs; ``exists=False`` when the service answered 404."""

    state: str
    succeeded: int = 0
    failed: int = 0
    workers: int = 1
    exists: bool = True


FAILED_STATES = frozenset({"Failed", "Stopped", "Deleted"})


def classify(status: JobStatus) -> Outcome:
    """Map a job status to Snakemake's three cases (see the module docstring for the table)."""
    if not status.exists or status.state in FAILED_STATES:
        return Outcome.FAILED
    if status.state == "Completed":
        return Outcome.SUCCEEDED
    if status.state == "Archived":
        ok = status.failed == 0 and status.succeeded >= status.workers
        return Outcome.SUCCEEDED if ok else Outcome.FAILED
    return Outcome.RUNNING


class Backoff:
    """Poll interval: ``initial`` after a change, times ``factor`` per quiet poll, capped at ``maximum``."""

    def __init__(self, initial: float, maximum: float, factor: float):
        if not (initial > 0 and maximum >= initial and factor >= 1):
            raise ValueError(
                f"poll interval needs 0 < initial <= maximum and factor >= 1, got "
                f"initial={initial}, maximum={maximum}, factor={factor}"
            )
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self.current = initial

    def next(self, changed: bool) -> float:
        """The pause before the next poll, given whether any job changed state in this one."""
        self.current = self.initial if changed else min(self.current * self.factor, self.maximum)
        return self.current
