"""A sandbox for untrusted model-written programs: one fresh, contained process per program.

Each :meth:`Sandbox.run` creates a fresh working folder and hands the job to the harness server (started once per
interpreter as ``python -I -S -B sandbox_harness.py --serve`` in its own session with a scrubbed environment:
``PATH``, ``HOME``/``TMPDIR``, ``LANG``; nothing inherited, so no secrets; see
:mod:`rlvr.rewards.sandbox_server`). The server forks a fresh child for the program, which contains itself (see
:mod:`rlvr.rewards.sandbox_harness`), runs the program once per test case in a forked grandchild and writes a
JSON report. Expected outputs never enter the sandbox: outputs are compared by the caller.

What is contained, when the parent runs as root on Linux (the normal case here and on the GPU machines):

* network: a new network namespace with no interface up — every connection fails, loopback included;
* files: the whole mount tree is read-only and nosuid inside a private mount namespace, except the working
  folder (also ``$TMPDIR``), a private tmpfs of ``folder_mb`` that only the program's namespace sees and that
  vanishes with it; ``/dev/null`` and the like stay usable. Files readable by an unprivileged user remain
  *readable*;
* processes: a PID namespace whose init is the harness: when it ends (or the wall-clock limit kills its process
  group) the kernel kills every process left inside, daemons that ``setsid`` or double-fork included;
* identity: a dedicated unprivileged uid per concurrent slot (``uid_base + slot``, no passwd entry needed; like
  ``nobody`` but unshared, so programs cannot signal each other and ``RLIMIT_NPROC`` is per program),
  no supplementary groups, ``no_new_privs``, not dumpable;
* resources: RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC, RLIMIT_FSIZE, RLIMIT_NOFILE, no core files; a per-case time
  limit and a wall-clock limit per program that SIGKILLs the whole process group;
* policy (also without root): a Python audit hook in the program's process ends it with a violation (exit 86) on
  any socket other than AF_UNIX, connect/bind/sendto, fork/exec/spawn/system/subprocess, ctypes/cffi, signals to
  other processes, and writes, deletions or renames outside the folder.

What is **not** contained: reading world-readable files; CPU/memory contention with the host beyond the rlimits
(no cgroups); kernel exploits. Without root (or where ``unshare`` is refused) only the audit hook, the rlimits
and the process-group kill remain: native code (e.g. ``_posixsubprocess.fork_exec``) can bypass an audit hook,
a daemon that leaves the process group survives, and processes of the same user (the parent included) can be
inspected through ``/proc`` (their environment too). In ``python`` test mode the tests run in the program's own
interpreter, so a deliberately adversarial program can fake a pass by tampering with it; stdio and call-based
tests compare outputs outside the sandbox and cannot be faked that way. What took effect is reported in
:attr:`SandboxRun.containment`.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlvr.rewards.sandbox_server import HarnessServer, ServerGone

PROBE_PROGRAM = "import json, re, math, heapq, collections, itertools, functools, bisect, fractions\nprint('ok')"

Mode = Literal["stdio", "call", "python"]


@dataclass(frozen=True)
class SandboxLimits:
    """Per-program limits. ``cpu_s`` defaults to the case time limit rounded up, plus one second."""

    case_timeout_s: float = 5.0
    cpu_s: int | None = None
    memory_mb: int = 1024
    max_processes: int = 64
    max_file_mb: int = 16
    max_open_files: int = 64
    max_output_bytes: int = 1 << 20
    folder_mb: int = 128  # the private in-memory working folder (with namespaces): what the program may write
    startup_s: float = 10.0  # allowance for interpreter start-up on a loaded machine, on top of the cases

    def harness_limits(self) -> dict[str, int]:
        cpu = self.cpu_s if self.cpu_s is not None else int(self.case_timeout_s) + 2
        return {
            "cpu_s": cpu,
            "memory_mb": self.memory_mb,
            "max_processes": self.max_processes,
            "max_file_mb": self.max_file_mb,
            "max_open_files": self.max_open_files,
            "folder_mb": self.folder_mb,
        }


@dataclass(frozen=True)
class CaseResult:
    """One test case as run: ``status`` is ok, timeout, crash or violation; ``output`` is set when ok."""

    status: str
    output: str | None = None
    detail: str | None = None


@dataclass
class SandboxRun:
    """One program run: per-case results, or a run-level ``status`` (timeout, sandbox_error) with no cases."""

    status: str
    cases: list[CaseResult] = field(default_factory=list)
    detail: str | None = None
    containment: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0


class Sandbox:
    """Runs programs in contained processes, at most ``max_concurrency`` at once (threads may share one)."""

    def __init__(
        self,
        limits: SandboxLimits | None = None,
        *,
        max_concurrency: int | None = None,
        python: str | None = None,
        drop_privileges: bool = True,
        namespaces: bool = True,
        audit_hook: bool = True,
        uid_base: int = 2_000_000_000,
        root_dir: str | os.PathLike | None = None,
    ) -> None:
        self.limits = limits or SandboxLimits()
        self.max_concurrency = max_concurrency or 2 * (os.cpu_count() or 1)
        self.namespaces = namespaces
        self.audit_hook = audit_hook
        self._drop = drop_privileges and hasattr(os, "getuid") and os.getuid() == 0
        self._uid_base = uid_base
        self._python = python
        self._slots: queue.Queue[int] = queue.Queue()
        for slot in range(self.max_concurrency):
            self._slots.put(slot)
        self._root = Path(tempfile.mkdtemp(prefix="rlvr-sandbox-", dir=root_dir))
        self._root.chmod(0o711)  # unprivileged uids may traverse into their own folder, not list the others
        self._ready = threading.Lock()
        self._servers: dict[str, HarnessServer] = {}
        self._servers_lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the harness servers and remove the sandbox root folder."""
        self._closed = True
        for python in list(self._servers):
            self._drop_server(python)
        shutil.rmtree(self._root, ignore_errors=True)

    def run(
        self,
        mode: Mode,
        program: str,
        inputs: list[str],
        *,
        fn_name: str | None = None,
        test_code: str = "",
        entry_point: str | None = None,
        stop_on_failure: bool = False,
    ) -> SandboxRun:
        """Run ``program`` once per input (``stdio``: fed on stdin; ``call``: JSON args of ``fn_name``;
        ``python``: one run of the program followed by ``test_code`` and ``check(entry_point)``)."""
        if self._closed:
            raise RuntimeError("Sandbox is closed")
        python = self._interpreter()
        slot = self._slots.get()
        try:
            return self._run_in_slot(
                slot,
                python,
                {
                    "mode": mode,
                    "program": program,
                    "inputs": list(inputs),
                    "fn_name": fn_name,
                    "test_code": test_code,
                    "entry_point": entry_point,
                    "stop_on_failure": stop_on_failure,
                },
            )
        finally:
            self._slots.put(slot)

    def _run_in_slot(self, slot: int, python: str, job: dict[str, Any]) -> SandboxRun:
        uid = self._uid_base + slot if self._drop and self._python_drops else None
        workdir = Path(tempfile.mkdtemp(prefix=f"s{slot}-", dir=self._root))
        if uid is not None:
            os.chown(workdir, uid, uid)
        workdir.chmod(0o700)
        job.update(
            workdir=str(workdir),
            uid=uid,
            limits=self.limits.harness_limits(),
            audit_hook=self.audit_hook,
            case_timeout_s=self.limits.case_timeout_s,
            max_output_bytes=self.limits.max_output_bytes,
        )
        wall = self.limits.startup_s + self.limits.case_timeout_s * max(1, len(job["inputs"])) + 1.0
        start = time.monotonic()
        try:
            status, report = self._server(python).run(json.dumps(job).encode(), wall)
        except ServerGone:  # killed from outside, say: one fresh start, then the error stands
            self._drop_server(python)
            status, report = self._server(python).run(json.dumps(job).encode(), wall)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        if status != "ok":
            return SandboxRun(status, detail=str(report), wall_s=time.monotonic() - start)
        return _parse_report(bytes(report), time.monotonic() - start)

    def _server(self, python: str) -> HarnessServer:
        """The running harness server for ``python``, started on first use with a scrubbed environment."""
        with self._servers_lock:
            server = self._servers.get(python)
            if server is None:
                env = {"PATH": "/usr/bin:/bin", "HOME": str(self._root), "TMPDIR": str(self._root), "LANG": "C.UTF-8"}
                log = self._root / f"harness-{len(self._servers)}.log"
                server = HarnessServer(python, env, self._root, log, namespaces=self.namespaces)
                self._servers[python] = server
            return server

    def _drop_server(self, python: str) -> None:
        with self._servers_lock:
            server = self._servers.pop(python, None)
        if server is not None:
            server.close()

    # -- interpreter choice ----------------------------------------------------------------------------------

    def _interpreter(self) -> str:
        """The first interpreter whose standard library the unprivileged uid can read (probed once)."""
        with self._ready:
            if hasattr(self, "_python_drops"):
                return self._python  # type: ignore[return-value]
            candidates = (
                [self._python] if self._python else [sys.executable, "/usr/bin/python3", shutil.which("python3")]
            )
            failures = []
            for drops in [True, False] if self._drop else [False]:
                self._python_drops = drops
                for python in dict.fromkeys(c for c in candidates if c):
                    detail = self._probe(python)
                    if detail is None:
                        if self._drop and not drops:
                            # e.g. a venv under /root: keep uid 0 inside the namespaces rather than fail; the
                            # read-only mounts and the network namespace still hold.
                            warnings.warn(
                                "sandbox: no interpreter usable by an unprivileged uid; programs keep "
                                "uid 0 inside the namespaces",
                                RuntimeWarning,
                                stacklevel=3,
                            )
                        self._python = python
                        return python
                    failures.append(f"{python} (drop privileges: {drops}): {detail}")
                    self._drop_server(python)
            del self._python_drops
            raise RuntimeError("sandbox: no interpreter could run the probe program:\n" + "\n".join(failures))

    def _probe(self, python: str) -> str | None:
        """None when ``python`` runs the probe program in the sandbox, else what went wrong."""
        slot = self._slots.get()
        try:
            run = self._run_in_slot(
                slot,
                python,
                {
                    "mode": "stdio",
                    "program": PROBE_PROGRAM,
                    "inputs": [""],
                    "fn_name": None,
                    "test_code": "",
                    "entry_point": None,
                    "stop_on_failure": True,
                },
            )
        except OSError as exc:
            return str(exc)
        finally:
            self._slots.put(slot)
        if run.cases and run.cases[0].status == "ok" and run.cases[0].output == "ok\n":
            return None
        return run.detail or (run.cases[0].detail if run.cases else run.status)

    def containment(self) -> dict[str, Any]:
        """What containment takes effect here, from a probe run (see the module doc)."""
        run = self.run("stdio", "print('ok')", [""])
        return run.containment


def _parse_report(out: bytes, wall_s: float) -> SandboxRun:
    try:
        report = json.loads(out)
    except ValueError:
        return SandboxRun("sandbox_error", detail=f"harness wrote no valid report: {out[-300:]!r}", wall_s=wall_s)
    containment = report.get("containment", {})
    if "harness_error" in report:
        return SandboxRun("sandbox_error", detail=report["harness_error"], containment=containment, wall_s=wall_s)
    cases = [CaseResult(c["status"], c.get("output"), c.get("detail")) for c in report["cases"]]
    return SandboxRun("ok", cases, containment=containment, wall_s=wall_s)
