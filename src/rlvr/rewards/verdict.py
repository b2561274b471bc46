"""The outcome of one verification: a reward and, when the check itself failed, why.

A verifier never lets a failure pass silently: a check that could not be completed (timeout, crash, sandbox
violation, ...) still yields a reward (0.0, as NeMo-RL scores it) but names its cause, so that the batch scorer can
count failures per cause and report them as metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

# Failure causes, shared by all verifiers so that metrics keys are stable across batches.
TIMEOUT = "timeout"  # the check ran past its time limit (killed, or math-verify's own alarm fired)
EXCEPTION = "exception"  # the verifier raised (e.g. an unparsable ground truth, MemoryError)
WORKER_CRASH = "worker_crash"  # the process running the check died without answering
CRASH = "crash"  # the candidate program exited with an error or was killed by a signal (code)
SANDBOX_VIOLATION = "sandbox_violation"  # the candidate tried something the sandbox forbids (code)
NO_PROGRAM = "no_program"  # the response holds no program to run (code)
SANDBOX_ERROR = "sandbox_error"  # the sandbox itself could not run the program (infrastructure, code)
BAD_OUTPUT = "bad_output"  # a reward function returned something other than one finite number per response

ERROR_CAUSES: tuple[str, ...] = (
    TIMEOUT,
    EXCEPTION,
    WORKER_CRASH,
    CRASH,
    SANDBOX_VIOLATION,
    NO_PROGRAM,
    SANDBOX_ERROR,
    BAD_OUTPUT,
)


@dataclass(frozen=True)
class Verdict:
    """Reward in [0, 1] for one response; ``error`` is a cause from :data:`ERROR_CAUSES` or ``None``."""

    reward: float
    error: str | None = None
    detail: str | None = None  # human-readable context for the error (exception text, signal, ...)
