"""The parent's side of the pre-forked sandbox harness (:func:`rlvr.rewards.sandbox_harness.serve`).

Starting ``python -I -S -B sandbox_harness.py`` for every program cost ~25 ms of CPU each (interpreter start-up and
imports), most of a small program's cost, and capped the code reward near 25-75 programs/s on two cores. The
server is that harness started once per interpreter; it forks one child per program, which contains itself
exactly as a fresh harness did (namespaces, read-only mounts, rlimits, uid drop, audit hook). The job and the
report travel on two pipes made here for each program and handed to the server over a Unix socket
(``SCM_RIGHTS``), so programs running at the same time never share a channel, and nothing of the channel is left
open when the untrusted program starts (each test case closes every inherited descriptor).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

HARNESS = Path(__file__).with_name("sandbox_harness.py")


class ServerGone(OSError):
    """The server process is not running (it failed to start, or was killed); a new one may be started."""


class HarnessServer:
    """One pre-forked harness process for ``python``, started with ``env`` in ``cwd``; its stderr goes to ``log``.
    With ``namespaces`` (and root), each program runs in namespaces of its own."""

    def __init__(self, python: str, env: dict[str, str], cwd: Path, log: Path, *, namespaces: bool = True) -> None:
        self.log = log
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with open(log, "ab") as stderr:
            self.process = subprocess.Popen(
                [python, "-I", "-S", "-B", str(HARNESS), "--serve", str(child_end.fileno())]
                + (["--namespaces"] if namespaces else []),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
                cwd=cwd,
                pass_fds=[child_end.fileno()],
                start_new_session=True,
            )
        child_end.close()
        self._socket = parent_end
        self._send_lock = threading.Lock()

    def close(self) -> None:
        """Stop the server (it exits when its socket closes; killed after 2 s). Running programs are not touched."""
        self._socket.close()
        try:
            self.process.wait(2.0)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def run(self, job: bytes, wall_s: float) -> tuple[str, bytes | str]:
        """Run one job: ``("ok", report)``, ``("timeout", why)`` past ``wall_s`` (the job's whole process group is
        killed) or ``("sandbox_error", why)`` when the child ended without a report. Raises :class:`ServerGone`
        when the server cannot take the job."""
        job_read, job_write = os.pipe()
        report_read, report_write = os.pipe()
        try:
            self._send(b"job", [job_read, report_write])
        except ServerGone:
            os.close(job_write)
            os.close(report_read)
            raise
        finally:
            os.close(job_read)
            os.close(report_write)
        pid = None
        try:
            try:
                _write_all(job_write, job)
            except BrokenPipeError:
                pass  # the child died before reading its job; the report pipe says so below
            finally:
                os.close(job_write)
            pid, report, timed_out = _read_report(report_read, time.monotonic() + wall_s)
        finally:
            os.close(report_read)
            if pid is not None:
                if timed_out:
                    _kill_group(pid)
                self._send(f"reap {pid}".encode(), [], missing_ok=True)
        if timed_out:
            return "timeout", f"program ran past {wall_s:.1f} s wall clock; killed"
        if pid is None or not report:
            return "sandbox_error", f"harness ended without a report: {self.log_tail()}"
        return "ok", report

    def log_tail(self, limit: int = 500) -> str:
        try:
            return self.log.read_bytes()[-limit:].decode(errors="replace").strip() or "(no output)"
        except OSError:
            return "(no log)"

    def _send(self, message: bytes, fds: list[int], missing_ok: bool = False) -> None:
        try:
            with self._send_lock:
                socket.send_fds(self._socket, [message], fds)
        except OSError as exc:
            if not missing_ok:
                code = self.process.poll()
                raise ServerGone(f"sandbox harness server is gone (exit code {code}): {self.log_tail()}") from exc


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_report(fd: int, deadline: float) -> tuple[int | None, bytes, bool]:
    """``(pid, report, timed_out)`` from a report pipe: the child's pid on the first line, then the report."""
    chunks = []
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(max(1, int(left * 1000))):
            timed_out = True
            break
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            timed_out = False
            break
        chunks.append(chunk)
    head, newline, report = b"".join(chunks).partition(b"\n")
    pid = int(head) if newline and head.isdigit() else None
    return pid, report, timed_out


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
