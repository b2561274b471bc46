"""One writer per run folder: an advisory lock that lives in the run folder, not in the working folder.

Snakemake's own lock sits in ``.snakemake/`` of the folder it was started from, so two runs started from different
folders into one run folder both proceeded, and each step appeared twice in ``metrics.jsonl``. This lock is an
``flock`` on ``<run>/<name>``: the kernel drops it when its holder dies (``kill -9`` included), so a lock can never
outlive its process. The file also records who holds it (host, pid, start time): a second run is refused at once
with that record, and a record left by a holder that died is reported when the lock is taken over.

``flock`` is per open file: a child process that inherits the descriptor (``pass_fds``) keeps holding the lock
after its parent exits, which is how a detached run (``-b``) keeps its folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from rlvr.errors import UserError

RUN_LOCK = ".run.lock"


class RunFolderBusy(UserError):
    """Another live process holds the run folder's lock."""


class RunLock:
    """``with RunLock(run_dir, what="..."):`` holds ``run_dir``'s lock for the block (or until ``release``)."""

    def __init__(self, run_dir: Path, *, name: str = RUN_LOCK, what: str = "a run"):
        self.path = Path(run_dir) / name
        self.what = what
        self.fd: int | None = None
        self.stale_holder: dict | None = None  # the record of a dead holder this lock was taken over from

    def acquire(self) -> RunLock:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UserError(
                f"cannot create the run-folder lock {self.path}: {exc.strerror}; check that the "
                f"folder is writable (or pick another run folder with RL_OUTPUT_DIR)"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_record(fd)
            os.close(fd)
            raise RunFolderBusy(_busy_message(self.path.parent, holder)) from None
        self.stale_holder = _read_record(fd) or None
        _write_record(
            fd,
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "what": self.what,
                "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            },
        )
        self.fd = fd
        return self

    def release(self) -> None:
        """Clear the record (a clean exit leaves nothing to report) and drop the lock."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass  # a full or read-only disk must not turn a finished run into a failure
        os.close(self.fd)
        self.fd = None

    def hand_over(self, pid: int) -> None:
        """A child that inherited the descriptor holds the lock from now on: record it and close ours."""
        if self.fd is None:
            return
        record = _read_record(self.fd)
        _write_record(self.fd, {**record, "pid": pid})
        os.close(self.fd)
        self.fd = None

    def takeover_note(self) -> str | None:
        """One line about the dead holder whose lock was taken over, if any."""
        if not self.stale_holder:
            return None
        h = self.stale_holder
        return (
            f"note: took over the lock of {self.path.parent} from {h.get('what', 'a run')} (pid {h.get('pid')} "
            f"on {h.get('host')}, started {h.get('started')}), which is no longer running"
        )

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_record(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 4096).decode("utf-8", "replace").strip()
        return json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}


def _write_record(fd: int, record: dict) -> None:
    try:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())
    except OSError:
        pass  # the lock itself holds; only the courtesy record is missing


def _busy_message(run_dir: Path, holder: dict) -> str:
    who = (
        (
            f"{holder.get('what', 'a run')} (pid {holder.get('pid')} on {holder.get('host')}, started "
            f"{holder.get('started')})"
        )
        if holder
        else "another process"
    )
    stop = f"`kill {holder['pid']}` on {holder.get('host')}" if holder.get("pid") else "stop it"
    return (
        f"the run folder {run_dir} is in use by {who}. Wait for it to finish, stop it ({stop}; the same "
        f"command then resumes), or write this run elsewhere (--name NAME, or RL_OUTPUT_DIR)"
    )
