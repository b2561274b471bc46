"""Runs inside the sandbox: contain a process, then run an untrusted program once per test case.

Started once by :class:`rlvr.rewards.sandbox.Sandbox` as ``python -I -S -B sandbox_harness.py --serve FD``: a
pre-forked server (:func:`serve`) that forks one child per program, so interpreter start-up and imports (most of
the cost of a small program) are paid once. Each child reads its JSON job from a pipe and writes one JSON report
to another. Standard library only, and everything it needs is imported before it gives up its privileges (the
interpreter's files may not be readable afterwards). The steps themselves live in :mod:`sandbox_containment`.

Order of containment (each step optional, what took effect is reported under ``containment``):

1. the server forks the program's child into a PID namespace of its own, whose PID 1 it is: when it exits the
   kernel kills every process left in the namespace (daemons included);
2. the child starts a session of its own (the parent's wall-clock kill takes its process group) and reads its job;
3. as root: new mount, network, IPC and UTS namespaces; every mount read-only and nosuid except the working
   folder, a private size-limited tmpfs; a fresh ``/proc`` showing only the namespace;
4. resource limits (CPU, address space, processes, file size, open files, no core dumps);
5. drop to an unprivileged uid/gid with no supplementary groups, ``no_new_privs`` (setuid binaries gain
   nothing), not dumpable (other processes of the uid cannot open its fds or ptrace it);
6. per test case: fork a child into its own process group, redirect stdin/stdout/stderr to files in the working
   folder, close every other fd, install an audit hook (no network, no child processes, no ctypes, no writes
   outside the folder: any attempt exits with code 86) and execute the program; a case past its time limit is
   killed with its process group.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import select
import signal
import socket
import sys
import time
import traceback

# -I leaves the script's own folder off sys.path; the containment steps sit beside it. Taken off again at once,
# so that the program's imports see the plain standard library.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sandbox_containment import (  # noqa: E402
    VIOLATION_EXIT,
    PidNamespaces,
    drop_privileges,
    enter_namespaces,
    limit_resources,
    make_audit_hook,
    mount_proc,
)

del sys.path[0]


def _child_streams(stdin_path: str, stdout_path: str, stderr_path: str) -> None:
    """Point fds 0/1/2 (and sys.std*) at the case files and close every other fd (the report pipe first)."""
    for fd, path, flags in (
        (0, stdin_path, os.O_RDONLY),
        (1, stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
        (2, stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
    ):
        opened = os.open(path, flags, 0o600)
        os.dup2(opened, fd)
        os.close(opened)
    os.closerange(3, 1 << 16)
    sys.stdin = sys.__stdin__ = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), "utf-8")
    sys.stdout = sys.__stdout__ = io.TextIOWrapper(io.BufferedWriter(io.FileIO(1, "w", closefd=False)), "utf-8")
    sys.stderr = sys.__stderr__ = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), "utf-8", write_through=True)


def _run_case_child(job: dict, index: int, paths: tuple[str, str, str, str]) -> None:
    """In the forked child: execute the program for case ``index``; exit 0 only when the case ran to its end."""
    os.setpgid(0, 0)
    stdin_path, stdout_path, stderr_path, result_path = paths
    _child_streams(stdin_path, stdout_path, stderr_path)
    mode = job["mode"]
    namespace = {"__name__": "__main__" if mode != "call" else "solution", "__builtins__": builtins}
    try:
        code = compile(job["program"], "solution.py", "exec")
        if job.get("audit_hook", True):
            # The harness itself uses ctypes: forget it, so that the program's import is seen (and refused).
            for name in [m for m in sys.modules if m.split(".")[0] in ("ctypes", "_ctypes")]:
                del sys.modules[name]
            sys.addaudithook(make_audit_hook(job["workdir"]))
        exec(code, namespace)
        if mode == "call":
            result = _call(namespace, job["fn_name"], job["inputs"][index])
        elif mode == "python":
            exec(compile(job["test_code"], "tests.py", "exec"), namespace)
            if job.get("entry_point"):
                namespace["check"](namespace[job["entry_point"]])
            result = "passed"
    except SystemExit as exc:
        sys.stdout.flush()
        # A stdio program may end with exit(); a test run must reach its end to count.
        if mode == "stdio" and exc.code in (None, 0):
            os._exit(0)
        print(f"program exited (SystemExit {exc.code!r}) before the case finished", file=sys.stderr)
        os._exit(1)
    except BaseException as exc:  # noqa: BLE001 - report the candidate's failure, whatever it is
        if not (mode == "python" and isinstance(exc, AssertionError)):
            traceback.print_exc(limit=-4)
            sys.stdout.flush()
            os._exit(1)
        result = "failed"  # a failed assertion in the tests is a wrong answer, not a crash
    sys.stdout.flush()
    if mode != "stdio":
        with open(result_path, "w", encoding="utf-8") as fh:  # inside the folder: allowed by the hook
            fh.write(result)
    os._exit(0)


def _call(namespace: dict, fn_name: str, raw_input: str) -> str:
    """LiveCodeBench call-based case: one JSON value per input line; the return value as JSON."""
    args = [json.loads(line) for line in raw_input.split("\n") if line.strip()]
    solution = namespace.get("Solution")
    if isinstance(solution, type) and hasattr(solution, fn_name):
        fn = getattr(solution(), fn_name)
    else:
        fn = namespace[fn_name]
    value = fn(*args)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return json.dumps({"__unserializable__": repr(value)[:200]})


def _wait(pid: int, timeout_s: float) -> tuple[int, bool]:
    """Wait for ``pid`` at most ``timeout_s``; kill its process group on timeout. Returns (wait status, timed out)."""
    deadline = time.monotonic() + timeout_s
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            _kill_group(pid)
            _, status = os.waitpid(pid, 0)
            break
        if pidfd is not None:
            poller = select.poll()
            poller.register(pidfd, select.POLLIN)
            poller.poll(max(1, int(left * 1000)))
        else:
            time.sleep(min(left, 0.002))
    if pidfd is not None:
        os.close(pidfd)
    _kill_group(pid)  # anything the case started in its group
    return status, timed_out


def _kill_group(pid: int) -> None:
    for kill, target in ((os.killpg, pid), (os.kill, pid)):
        try:
            kill(target, signal.SIGKILL)
        except OSError:
            pass


def _read_head(path: str, limit: int) -> str:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def run_cases(job: dict) -> list[dict]:
    """Step 6, for every case; stops at the first failed run when ``stop_on_failure``."""
    results = []
    workdir, limit = job["workdir"], int(job["max_output_bytes"])
    for index, raw_input in enumerate(job["inputs"]):
        paths = tuple(os.path.join(workdir, f"{name}_{index}") for name in ("stdin", "stdout", "stderr", "result"))
        with open(paths[0], "w", encoding="utf-8") as fh:
            fh.write(raw_input if job["mode"] == "stdio" else "")
        try:
            pid = os.fork()
        except OSError as exc:  # e.g. RLIMIT_NPROC exhausted by what an earlier case left running
            results.append({"status": "crash", "detail": f"could not start the case: {exc}"})
            break
        if pid == 0:
            try:
                _run_case_child(job, index, paths)
            finally:
                os._exit(1)  # the child never returns into the harness
        try:
            os.setpgid(pid, pid)  # also done by the child; whichever runs first wins the race with a timeout kill
        except OSError:
            pass
        status, timed_out = _wait(pid, float(job["case_timeout_s"]))
        results.append(_case_result(job, os.waitstatus_to_exitcode(status), timed_out, paths, limit))
        for path in paths:  # the folder holds one case's files at a time (its size is limited)
            try:
                os.unlink(path)
            except OSError:
                pass
        if results[-1]["status"] != "ok" and job.get("stop_on_failure"):
            break
    return results


def _case_result(job: dict, code: int, timed_out: bool, paths: tuple[str, ...], limit: int) -> dict:
    if timed_out or code == -signal.SIGXCPU:
        return {"status": "timeout", "detail": f"no exit within {job['case_timeout_s']} s"}
    if code == 0:
        return {"status": "ok", "output": _read_head(paths[1] if job["mode"] == "stdio" else paths[3], limit)}
    stderr_tail = _read_head(paths[2], 4000)[-1000:]
    if code == VIOLATION_EXIT:
        return {"status": "violation", "detail": (stderr_tail.strip().splitlines() or ["?"])[-1]}
    return {"status": "crash", "detail": f"exit {code}: {stderr_tail.strip()[-300:]}"}


def run_job(job: dict, report_fd: int, namespaces: str | None) -> None:
    """Steps 3-6 for one program, then its JSON report on ``report_fd``; ends the process. ``namespaces`` says
    why this process is not PID 1 of a namespace of its own (None when it is)."""
    os.environ["HOME"] = os.environ["TMPDIR"] = job["workdir"]  # the server's environment is scrubbed already
    containment: dict = {"audit_hook": bool(job.get("audit_hook", True))}
    if namespaces is None:
        enter_namespaces(job["workdir"], job["limits"]["folder_mb"], job.get("uid"), containment)
        mount_proc(containment)
    else:
        containment["namespaces"] = namespaces
    try:
        limit_resources(job["limits"])
        drop_privileges(job.get("uid"), containment)
        os.chdir(job["workdir"])
        os.umask(0o077)
        report = {"cases": run_cases(job), "containment": containment}
    except Exception as exc:  # noqa: BLE001 - the parent reports this as a sandbox error
        report = {"harness_error": f"{type(exc).__name__}: {exc}", "containment": containment}
    data = memoryview(json.dumps(report).encode())
    while data:  # a pipe takes at most 64 KiB per write
        data = data[os.write(report_fd, data) :]
    os._exit(0)


def _start_job(job_fd: int, report_fd: int, namespaces: str | None) -> None:
    """Step 2, in a fresh child of the server: its own session, its pid as the parent sees it first on the report
    pipe (so the parent knows whom to kill), then the job read from its pipe."""
    try:
        os.setsid()
        # PID 1 of its namespace: its pid outside is what the host's /proc (not yet replaced) calls "self".
        pid = os.getpid() if namespaces is not None else int(os.readlink("/proc/self"))
        os.write(report_fd, f"{pid}\n".encode())
        with os.fdopen(job_fd, "rb") as fh:
            job = json.loads(fh.read())
        run_job(job, report_fd, namespaces)
    finally:
        os._exit(1)


def serve(sock_fd: int, namespaces: bool) -> None:
    """The pre-forked harness: fork one child per job received on the socket, until the socket closes.

    Interpreter start-up and imports are paid once here instead of once per program; each child is contained on
    its own, exactly as a freshly started harness would be. A job message (``job``) carries two file descriptors,
    the read end of the job pipe and the write end of the report pipe. A child stays unreaped (a zombie) until
    the parent sends ``reap <pid>``, so its pid, which the parent may use to kill its process group, cannot be
    reused by another process before the parent is done with it.
    """
    sock = socket.socket(fileno=sock_fd)
    pid_namespaces = PidNamespaces(namespaces)
    released: set[int] = set()
    while True:
        for pid in list(released):
            try:
                done = os.waitpid(pid, os.WNOHANG)[0]
            except ChildProcessError:
                done = pid
            if done:
                released.discard(pid)
        if released and not select.select([sock], [], [], 0.05)[0]:
            continue
        message, fds, _, _ = socket.recv_fds(sock, 64, 2)
        if not message:
            return  # the Sandbox closed, or its process died
        kind, _, arg = message.decode().partition(" ")
        if kind == "reap":
            released.add(int(arg))
            continue
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            continue
        try:
            child = pid_namespaces.fork()
        except OSError:  # no process left to fork: the parent reads EOF without a pid, a sandbox error
            child = None
        if child == 0:
            sock.close()
            _start_job(*fds, pid_namespaces.error)
        for fd in fds:
            os.close(fd)


def main() -> None:
    # ``-S`` skips site, which is what defines exit()/quit(); programs commonly end with them.
    for name in ("exit", "quit"):
        if not hasattr(builtins, name):
            setattr(builtins, name, sys.exit)
    if len(sys.argv) not in (3, 4) or sys.argv[1] != "--serve" or sys.argv[3:] not in ([], ["--namespaces"]):
        sys.exit("usage: sandbox_harness.py --serve SOCKET_FD [--namespaces] (started by rlvr.rewards.sandbox.Sandbox)")
    serve(int(sys.argv[2]), namespaces=sys.argv[3:] == ["--namespaces"])


if __name__ == "__main__":
    main()
