"""Runs inside the sandbox: contain this process, then run an untrusted program once per test case.

Started once by :class:`rlvr.rewards.sandbox.Sandbox` as ``python -I -S -B sandbox_harness.py --serve FD``: a
pre-forked server (:func:`serve`) that forks one child per program, so interpreter start-up and imports (most of
the cost of a small program) are paid once. Each child reads its JSON job from a pipe and writes one JSON report
to another. Standard library only, and everything it needs is imported before it gives up its privileges (the
interpreter's files may not be readable afterwards).

Order of containment (each step optional, what took effect is reported under ``containment``):

1. as root: ``unshare`` new mount, network, PID, IPC and UTS namespaces; make every mount read-only and nosuid
   (``mount_setattr`` recursive) except a bind mount of the working folder;
2. fork: the child is PID 1 of the new PID namespace, so when it exits the kernel kills every process left in the
   namespace (daemons included); it mounts a fresh ``/proc`` showing only the namespace;
3. resource limits (CPU, address space, processes, file size, open files, no core dumps);
4. drop to an unprivileged uid/gid with no supplementary groups, ``no_new_privs`` (setuid binaries gain
   nothing), not dumpable (other processes of the uid cannot open its fds or ptrace it);
5. per test case: fork a child into its own process group, redirect stdin/stdout/stderr to files in the working
   folder, close every other fd, install an audit hook (no network, no child processes, no ctypes, no writes
   outside the folder: any attempt exits with code 86) and execute the program; a case past its time limit is
   killed with its process group.
"""

from __future__ import annotations

import builtins
import ctypes
import io
import json
import os
import resource
import select
import signal
import socket
import sys
import time
import traceback

VIOLATION_EXIT = 86
CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 0x40000
MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x2, 0x4, 0x8
SYS_MOUNT_SETATTR, AT_FDCWD, AT_RECURSIVE = 442, -100, 0x8000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 0x1, 0x2
PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 4, 38
AF_UNIX = 1  # local socketpairs (asyncio's self-pipe) stay allowed; every other family is network


def _load_libc() -> ctypes.CDLL:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)  # glibc; skips ctypes.util (~10 ms: imports, ldconfig)
    except OSError:
        from ctypes.util import find_library

        return ctypes.CDLL(find_library("c"), use_errno=True)


_libc = _load_libc()


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags: int) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), None), f"mount {target}")


def _set_mount_attr(path: str, flags: int, attr_set: int, attr_clr: int) -> None:
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    result = _libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr))
    _check(result, f"mount_setattr {path}")


def enter_namespaces(workdir: str, containment: dict) -> bool:
    """Step 1 (root only). Returns whether a PID namespace was created (the caller must then fork)."""
    try:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    except OSError as exc:
        containment["namespaces"] = f"unavailable ({exc})"
        return False
    containment["namespaces"] = "mount,net,pid,ipc,uts"
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates back to the host
        _mount(workdir, workdir, None, MS_BIND)  # the folder becomes its own mount, to stay writable
        _set_mount_attr("/", AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0)
        _set_mount_attr(workdir, 0, 0, MOUNT_ATTR_RDONLY)
        containment["read_only_root"] = True
    except OSError as exc:
        containment["read_only_root"] = f"unavailable ({exc})"
    return True


def mount_proc(containment: dict) -> None:
    """Step 2: a /proc that shows the namespace's processes only."""
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        containment["private_proc"] = True
    except OSError as exc:
        containment["private_proc"] = f"unavailable ({exc})"


def limit_resources(limits: dict) -> None:
    """Step 3: the limits apply to the harness and are inherited by every case."""
    mb = 1024 * 1024
    for name, value in (
        ("RLIMIT_CPU", int(limits["cpu_s"])),
        ("RLIMIT_AS", int(limits["memory_mb"]) * mb),
        ("RLIMIT_NPROC", int(limits["max_processes"])),
        ("RLIMIT_FSIZE", int(limits["max_file_mb"]) * mb),
        ("RLIMIT_NOFILE", int(limits["max_open_files"])),
        ("RLIMIT_CORE", 0),
    ):
        resource.setrlimit(getattr(resource, name), (value, value))


def drop_privileges(uid: int | None, containment: dict) -> None:
    """Step 4."""
    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    containment["uid"] = os.getuid()
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def make_audit_hook(workdir: str):
    """Step 5's policy. ``sys.addaudithook`` hooks cannot be removed; native code can still bypass them."""
    blocked = {
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.spawn",
        "os.exec",
        "os.system",
        "subprocess.Popen",
        "socket.connect",
        "socket.bind",
        "socket.sendto",
        "socket.sendmsg",
        "socket.getaddrinfo",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.cdata",
        "ctypes.call_function",
        "os.setuid",
        "os.setgid",
    }
    path_events = {
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.mkdir",
        "os.chmod",
        "os.chown",
        "os.symlink",
        "os.link",
        "os.truncate",
        "os.utime",
        "shutil.rmtree",
        "os.chflags",
        "os.lchflags",
    }
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    root = os.path.realpath(workdir)
    own_pid = os.getpid()
    allowed = {"/dev/null", "/dev/stdout", "/dev/stderr"}

    def violation(event: str, detail: object) -> None:
        os.write(2, f"\nsandbox violation: {event} {detail!r}\n".encode(errors="replace")[:500])
        os._exit(VIOLATION_EXIT)

    def outside(path: object) -> bool:
        if isinstance(path, int):
            return False  # an fd already open: its opening was checked
        path = os.fsdecode(path)
        if path in allowed:
            return False
        real = os.path.realpath(os.path.join(root, path))
        return real != root and not real.startswith(root + os.sep)

    def hook(event: str, args: tuple) -> None:
        if event in blocked:
            violation(event, args[:2])
        elif event == "socket.__new__" and args[1] != AF_UNIX:
            violation(event, args[1])
        elif event == "import" and args[0].split(".")[0] in ("ctypes", "_ctypes", "cffi", "_cffi_backend"):
            violation(event, args[0])
        elif event == "open" and args[0] is not None and (args[2] or 0) & write_flags and outside(args[0]):
            violation("write outside the sandbox folder", args[0])
        elif (event in ("os.kill", "os.killpg", "signal.pthread_kill") and args[0] not in (own_pid, 0)) or (
            event in path_events and args and outside(args[0])
        ):
            violation(event, args[0])

    return hook


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
    """Step 5, for every case; stops at the first failed run when ``stop_on_failure``."""
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
        code = os.waitstatus_to_exitcode(status)
        stderr_tail = _read_head(paths[2], 4000)[-1000:]
        if timed_out or code == -signal.SIGXCPU:
            case = {"status": "timeout", "detail": f"no exit within {job['case_timeout_s']} s"}
        elif code == VIOLATION_EXIT:
            case = {"status": "violation", "detail": (stderr_tail.strip().splitlines() or ["?"])[-1]}
        elif code != 0:
            case = {"status": "crash", "detail": f"exit {code}: {stderr_tail.strip()[-300:]}"}
        else:
            source = paths[1] if job["mode"] == "stdio" else paths[3]
            case = {"status": "ok", "output": _read_head(source, limit)}
        results.append(case)
        if case["status"] != "ok" and job.get("stop_on_failure"):
            break
    return results


def run_job(job: dict, report_fd: int) -> None:
    """Steps 1-5 for one program, then its JSON report on ``report_fd``; ends the process."""
    os.environ["HOME"] = os.environ["TMPDIR"] = job["workdir"]  # the server's environment is scrubbed already
    containment: dict = {"audit_hook": bool(job.get("audit_hook", True))}
    in_pid_ns = job.get("namespaces", True) and os.getuid() == 0 and enter_namespaces(job["workdir"], containment)
    if in_pid_ns:
        init = os.fork()
        if init:  # outside the namespace: just relay the exit status of the namespace's PID 1
            os.close(report_fd)
            _, status = os.waitpid(init, 0)
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)
        mount_proc(containment)
    elif "namespaces" not in containment:
        containment["namespaces"] = "not requested" if not job.get("namespaces", True) else "not root"
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


def _start_job(job_fd: int, report_fd: int) -> None:
    """In a fresh child of the server: its own session (the parent's wall-clock kill takes the process group),
    its pid first on the report pipe (so the parent knows whom to kill), then the job read from its pipe."""
    try:
        os.setsid()
        os.write(report_fd, f"{os.getpid()}\n".encode())
        with os.fdopen(job_fd, "rb") as fh:
            job = json.loads(fh.read())
        run_job(job, report_fd)
    finally:
        os._exit(1)


def serve(sock_fd: int) -> None:
    """The pre-forked harness: fork one child per job received on the socket, until the socket closes.

    Interpreter start-up and imports are paid once here instead of once per program; each child is contained on
    its own, exactly as a freshly started harness would be. A job message (``job``) carries two file descriptors,
    the read end of the job pipe and the write end of the report pipe. A child stays unreaped (a zombie) until
    the parent sends ``reap <pid>``, so its pid, which the parent may use to kill its process group, cannot be
    reused by another process before the parent is done with it.
    """
    sock = socket.socket(fileno=sock_fd)
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
            child = os.fork()
        except OSError:  # no process left to fork: the parent reads EOF without a pid, a sandbox error
            child = None
        if child == 0:
            sock.close()
            _start_job(*fds)
        for fd in fds:
            os.close(fd)


def main() -> None:
    # ``-S`` skips site, which is what defines exit()/quit(); programs commonly end with them.
    for name in ("exit", "quit"):
        if not hasattr(builtins, name):
            setattr(builtins, name, sys.exit)
    if len(sys.argv) != 3 or sys.argv[1] != "--serve":
        sys.exit("usage: sandbox_harness.py --serve SOCKET_FD (started by rlvr.rewards.sandbox.Sandbox)")
    serve(int(sys.argv[2]))


if __name__ == "__main__":
    main()
