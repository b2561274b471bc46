"""Run Snakemake attached, and stop the whole job tree cleanly on Ctrl-C or SIGTERM.

``subprocess.call`` killed Snakemake with SIGKILL when the CLI was interrupted, so its lock stayed and "run the
same command again" failed with a LockException. Here Snakemake runs in a process group of its own; an interrupt
of the CLI (SIGINT, SIGTERM, SIGHUP) is forwarded to that whole group as SIGINT, exactly what a terminal's Ctrl-C
does to a foreground job: Snakemake cancels its jobs, removes their incomplete outputs and releases its lock, and
each stage stops (the GRPO stage between two writes: its step checkpoints are renamed into place whole). Whatever
is still alive after a grace period gets SIGTERM, then SIGKILL, and a lock Snakemake could not release is
released with ``snakemake --unlock``. If the CLI itself is killed (``kill -9``), a small guard process outside the
group, tied to the CLI by a parent-death signal, does the same. No process of the run survives the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from rlvr.launch.lifeline import die_with_parent

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


def _wait_group(pgid: int, timeout_s: float, reap: Callable[[], object]) -> bool:
    """Wait until no process of the group is left (``reap`` collects the leader if it is our child)."""
    deadline = time.monotonic() + timeout_s
    while True:
        reap()
        if not _group_alive(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def stop_group(pgid: int, grace_s: float = 60.0, reap: Callable[[], object] = lambda: None) -> bool:
    """SIGINT the group, then SIGTERM, then SIGKILL, each after its grace period; returns once all are gone.

    True when the group ended on SIGINT alone (Snakemake cleaned up after itself).
    """
    for sig, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if not _signal_group(pgid, sig) or _wait_group(pgid, wait_s, reap):
            return sig == signal.SIGINT
    return False


def _start_guard(pgid: int, grace_s: float, unlock_argv: list[str] | None, env: dict[str, str]) -> subprocess.Popen:
    """A watchdog outside the group that stops it if this process dies without doing so (``kill -9``)."""
    argv = [
        sys.executable,
        "-m",
        "rlvr.launch.supervise",
        str(os.getpid()),
        str(pgid),
        str(grace_s),
        json.dumps(unlock_argv),
    ]
    return subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_guard_preexec)  # noqa: PLW1509


def _default_sigint() -> None:
    # A CLI started in the background by a non-interactive shell inherits SIGINT *ignored*, and so would Snakemake
    # (Python then installs no KeyboardInterrupt handler): the forwarded Ctrl-C must reach it all the same.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _guard_preexec() -> None:
    # SIGTERM is ignored until the guard's handler is in place: the death signal of a CLI killed while the guard
    # starts must not kill the guard (it then sees its parent gone instead).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    die_with_parent()


def run_attached(
    argv: list[str],
    env: dict[str, str],
    *,
    unlock_argv: list[str] | None = None,
    on_interrupt: Callable[[], None] | None = None,
    grace_s: float = 60.0,
) -> int:
    """Run ``argv`` in its own process group; on an interrupt stop the group and return 130.

    ``unlock_argv`` releases Snakemake's lock when Snakemake had to be killed;
    ``on_interrupt`` prints what survived and how to resume.
    """
    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)

    # Handlers first: an interrupt that comes while Snakemake starts is then a stop, not a traceback.
    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    proc = subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=_default_sigint)  # noqa: PLW1509
    guard = _start_guard(proc.pid, grace_s, unlock_argv, env)
    try:
        while proc.poll() is None and not received:
            try:
                proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
        if not received:
            return proc.returncode
        print(
            f"\ninterrupted ({signal.Signals(received[0]).name}): stopping Snakemake and its jobs ...",
            file=sys.stderr,
            flush=True,
        )
        clean = stop_group(proc.pid, grace_s, reap=proc.poll)
        proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        guard.kill()  # the group is gone (or ended by itself): nothing left to guard
        guard.wait()
    if not clean and unlock_argv is not None:
        # Only a Snakemake that had to be killed leaves its lock; --unlock would also drop the locks of another
        # Snakemake working in the same folder, so it is not run after a clean stop.
        subprocess.run(unlock_argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if on_interrupt is not None:
        on_interrupt()
    return INTERRUPTED


def _guard_main(parent: int, pgid: int, grace_s: float, unlock_argv: list[str] | None) -> None:
    """``python -m rlvr.launch.supervise CLI_PID PGID GRACE UNLOCK_JSON``: wait for the CLI to die, then stop."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # The parent-death signal covers a CLI dying from now on; the pid check, one that died while this started.
    while os.getppid() == parent and not stop.wait(1.0):
        pass
    if not _group_alive(pgid):
        return
    if not stop_group(pgid, grace_s) and unlock_argv:
        subprocess.run(unlock_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    _guard_main(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4]))
