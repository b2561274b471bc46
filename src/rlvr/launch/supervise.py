"""Run Snakemake attached, and stop the whole job tree cleanly on Ctrl-C or SIGTERM.

``subprocess.call`` killed Snakemake with SIGKILL when the CLI was interrupted, so its lock stayed and "run the
same command again" failed with a LockException. Here Snakemake runs in a process group of its own; an interrupt
of the CLI (SIGINT, SIGTERM, SIGHUP) is forwarded to that whole group as SIGINT, exactly what a terminal's Ctrl-C
does to a foreground job: Snakemake cancels its jobs, removes their incomplete outputs and releases its lock, and
each stage stops (the GRPO stage between two writes: its step checkpoints are renamed into place whole). Whatever
is still alive after a grace period gets SIGTERM, then SIGKILL, and a lock Snakemake could not release is
released with ``snakemake --unlock``. No process of the run survives the CLI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
INTERRUPTED = 130  # the shell's code for "ended by SIGINT"


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False


def _group_alive(pgid: int) -> bool:
    return _signal_group(pgid, 0)


def _wait_group(proc: subprocess.Popen, pgid: int, timeout_s: float) -> bool:
    """Wait until the leader has exited and no process of its group is left; True if so in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None and not _group_alive(pgid):
            return True
        time.sleep(0.1)
    return proc.poll() is not None and not _group_alive(pgid)


def stop_group(proc: subprocess.Popen, grace_s: float = 60.0) -> bool:
    """SIGINT the group, then SIGTERM, then SIGKILL, each after its grace period; returns once all are gone.

    True when the group ended on SIGINT alone (Snakemake cleaned up after itself).
    """
    pgid = proc.pid
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if not _signal_group(pgid, sig) or _wait_group(proc, pgid, wait_s):
            proc.wait()
            return sig == signal.SIGINT
    proc.wait()
    return False


def run_attached(argv: list[str], env: dict[str, str], *, unlock_argv: list[str] | None = None,
                 on_interrupt: Callable[[], None] | None = None, grace_s: float = 60.0) -> int:
    """Run ``argv`` in its own process group; on an interrupt stop the group and return 130.

    ``unlock_argv`` releases Snakemake's lock when Snakemake had to be killed;
    ``on_interrupt`` prints what survived and how to resume.
    """
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    try:
        while proc.poll() is None and not received:
            try:
                proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        if not received:
            return proc.returncode
        print(f"\ninterrupted ({signal.Signals(received[0]).name}): stopping Snakemake and its jobs ...",
              file=sys.stderr, flush=True)
        clean = stop_group(proc, grace_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not clean and unlock_argv is not None:
        # Only a Snakemake that had to be killed leaves its lock; --unlock would also drop the locks of another
        # Snakemake working in the same folder, so it is not run after a clean stop.
        subprocess.run(unlock_argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if on_interrupt is not None:
        on_interrupt()
    return INTERRUPTED
