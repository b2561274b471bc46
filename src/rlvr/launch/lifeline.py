"""Children that cannot outlive their launcher.

A launcher killed by Snakemake (or by ``kill -9``) used to leave its trainer running, still writing into a run
folder Snakemake had already declared failed. On Linux each child asks the kernel for a parent-death signal
(``PR_SET_PDEATHSIG``): when the launcher dies, however it dies, the child receives SIGTERM. Elsewhere the launcher's
own SIGTERM handler is the only guard.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:  # runs in the child between fork and exec: nothing slow, no subprocess
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def popen_tied(cmd: Sequence[str], env: Mapping[str, str], **kwargs) -> subprocess.Popen:
    """``subprocess.Popen`` whose child gets SIGTERM when this process dies."""
    preexec = die_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(list(cmd), env=dict(env), preexec_fn=preexec, **kwargs)  # noqa: PLW1509


def call_tied(cmd: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``cmd`` to the end; SIGTERM/SIGINT to this process is passed on to it and waited for."""
    proc = popen_tied(cmd, env)

    def forward(signum, _frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
