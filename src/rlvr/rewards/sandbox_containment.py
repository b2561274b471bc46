"""The containment steps of the sandbox harness, one function each (the order is in the harness's docstring).

Loaded by :mod:`sandbox_harness` inside the harness interpreter (``python -I -S -B``, standard library only);
nothing else imports it. Each step records what took effect in a ``containment`` dict, which travels back with
the report, since a fallback (no root, no namespaces) is weaker.
"""

from __future__ import annotations

import ctypes
import os
import resource

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


def _mount(source, target, fstype, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    result = _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data))
    _check(result, f"mount {target}")


def _set_mount_attr(path: str, flags: int, attr_set: int, attr_clr: int) -> None:
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    result = _libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr))
    _check(result, f"mount_setattr {path}")


class PidNamespaces:
    """Step 1, in the server: fork each job's child as PID 1 of a PID namespace of its own.

    ``unshare(CLONE_NEWPID)`` moves only the caller's *future children* into a new namespace, so the server
    unshares, forks, and returns its children's namespace to its own (``setns``): one fork per program, where a
    child that unshared for itself had to fork once more to get a PID 1. ``error`` says why namespaces are off.
    """

    def __init__(self, wanted: bool) -> None:
        self.error: str | None = None if wanted else "not requested"
        self._own = None
        if wanted and os.getuid() != 0:
            self.error = "not root"
        elif wanted:
            try:
                self._own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                self.error = f"unavailable ({exc})"

    def fork(self) -> int:
        """``os.fork()``; the child is PID 1 of a fresh PID namespace unless :attr:`error` is set."""
        if self._own is None:
            return os.fork()
        try:
            _check(_libc.unshare(CLONE_NEWPID), "unshare")
        except OSError as exc:
            self.error = f"unavailable ({exc})"
            os.close(self._own)
            self._own = None
            return os.fork()
        try:
            pid = os.fork()
        except OSError:
            self._restore()
            raise
        if pid == 0:
            os.close(self._own)  # the child keeps no handle on the host's namespace
            self._own = None
        else:
            self._restore()
        return pid

    def _restore(self) -> None:
        """The server's children go back to its own namespace, so that the next fork gets a new one of its own."""
        _check(_libc.setns(self._own, CLONE_NEWPID), "setns")


def enter_namespaces(workdir: str, folder_mb: int, uid: int | None, containment: dict) -> None:
    """Step 3 (root, PID 1 of a fresh PID namespace): new mount, network, IPC and UTS namespaces; every mount
    read-only and nosuid but the working folder, which becomes a private size-limited tmpfs (so that nothing the
    program writes reaches the host's disk or outlives it; a bind mount of the folder where tmpfs is refused)."""
    try:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
    except OSError as exc:
        containment["namespaces"] = f"pid only ({exc})"
        return
    containment["namespaces"] = "mount,net,pid,ipc,uts"
    try:
        _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount propagates back to the host
        owner = "" if uid is None else f",uid={uid},gid={uid}"
        try:
            _mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"size={int(folder_mb)}m,mode=0700{owner}")
            containment["private_folder"] = f"tmpfs {int(folder_mb)} MB"
        except OSError as exc:
            _mount(workdir, workdir, None, MS_BIND)  # the folder becomes its own mount, to stay writable
            containment["private_folder"] = f"unavailable ({exc})"
        _set_mount_attr("/", AT_RECURSIVE, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID, 0)
        _set_mount_attr(workdir, 0, 0, MOUNT_ATTR_RDONLY)
        containment["read_only_root"] = True
    except OSError as exc:
        containment["read_only_root"] = f"unavailable ({exc})"


def mount_proc(containment: dict) -> None:
    """Step 3, last: a /proc that shows the namespace's processes only."""
    try:
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        containment["private_proc"] = True
    except OSError as exc:
        containment["private_proc"] = f"unavailable ({exc})"


def limit_resources(limits: dict) -> None:
    """Step 4: the limits apply to the harness and are inherited by every case."""
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
    """Step 5."""
    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    containment["uid"] = os.getuid()
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


_BLOCKED_EVENTS = frozenset(
    {
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
)
_PATH_EVENTS = frozenset(
    {
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
)


def make_audit_hook(workdir: str):
    """Step 6's policy. ``sys.addaudithook`` hooks cannot be removed; native code can still bypass them."""
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
        if event in _BLOCKED_EVENTS:
            violation(event, args[:2])
        elif event == "socket.__new__" and args[1] != AF_UNIX:
            violation(event, args[1])
        elif event == "import" and args[0].split(".")[0] in ("ctypes", "_ctypes", "cffi", "_cffi_backend"):
            violation(event, args[0])
        elif event == "open" and args[0] is not None and (args[2] or 0) & write_flags and outside(args[0]):
            violation("write outside the sandbox folder", args[0])
        elif (event in ("os.kill", "os.killpg", "signal.pthread_kill") and args[0] not in (own_pid, 0)) or (
            event in _PATH_EVENTS and args and outside(args[0])
        ):
            violation(event, args[0])

    return hook
