"""Hostile programs score 0, change nothing outside their folder, and leave no process behind.

Each program runs twice: with the full sandbox (audit hook + kernel containment) and with the audit hook off,
which proves the kernel layer alone (namespaces, read-only mounts, unprivileged uid, rlimits) holds. The kernel
layer needs root; without it those cases are skipped.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from rlvr.rewards.code_verifier import check_code
from rlvr.rewards.sandbox import Sandbox, SandboxLimits

UID_BASE = 2_100_000_000
ROOT = os.getuid() == 0
SECRET = "rlvr-test-secret-7f3a"


def _sandbox_uids_running() -> list[tuple[int, int]]:
    """(pid, uid) of every process whose real uid belongs to this test's sandboxes."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if UID_BASE <= uid < UID_BASE + 16:
            found.append((int(entry.name), uid))
    return found


@pytest.fixture(scope="module", params=["full", "kernel_only"])
def sandbox(request):
    if request.param == "kernel_only" and not ROOT:
        pytest.skip("the kernel layer needs root")
    limits = SandboxLimits(case_timeout_s=1.5, memory_mb=256, max_processes=32, startup_s=5.0)
    with Sandbox(limits, max_concurrency=2, uid_base=UID_BASE, audit_hook=request.param == "full") as box:
        yield box


def _expect_zero_and_no_leftovers(response: str, tests: dict, sandbox: Sandbox) -> str | None:
    start = time.monotonic()
    verdict = check_code(response, tests, sandbox=sandbox)
    assert verdict.reward == 0.0, verdict
    assert time.monotonic() - start < 10.0
    deadline = time.monotonic() + 2.0
    while _sandbox_uids_running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sandbox_uids_running() == []
    return verdict.error


def _stdio(expected: str = "done") -> dict:
    return {"kind": "stdio", "inputs": [""], "outputs": [expected], "fn_name": None}


def test_containment_is_reported(sandbox) -> None:
    """As root the run reports namespaces, a read-only root, a private /proc and an unprivileged uid."""
    containment = sandbox.containment()
    assert containment["audit_hook"] == sandbox.audit_hook
    if ROOT:
        assert containment["namespaces"] == "mount,net,pid,ipc,uts"
        assert containment["read_only_root"] is True and containment["private_proc"] is True
        assert containment["uid"] >= UID_BASE


def test_fork_bomb(sandbox) -> None:
    """A fork bomb is stopped (hook: first fork; kernel: RLIMIT_NPROC + time limit) and fully reaped."""
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    assert _expect_zero_and_no_leftovers(bomb, _stdio(), sandbox) in ("sandbox_violation", "timeout", "crash")


def test_memory_bomb(sandbox) -> None:
    """Allocating without bound hits RLIMIT_AS (MemoryError): a crash, not a machine-wide OOM."""
    bomb = "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 1024 * 1024))\n"
    assert _expect_zero_and_no_leftovers(bomb, _stdio(), sandbox) == "crash"


def test_infinite_loop(sandbox) -> None:
    """A busy loop is killed at the case time limit and reported as a timeout."""
    assert _expect_zero_and_no_leftovers("while True:\n    pass\n", _stdio(), sandbox) == "timeout"


def test_files_outside_the_folder_are_untouched(sandbox, tmp_path) -> None:
    """Deleting, overwriting or creating files outside the folder fails (hook: violation; kernel: read-only)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    victim.chmod(0o666)
    tmp_path.chmod(0o777)  # even a world-writable folder stays untouchable
    created = tmp_path / "created.txt"
    for program in (
        f"import os\nos.remove({str(victim)!r})\nprint('done')",
        f"open({str(victim)!r}, 'w').write('owned')\nprint('done')",
        f"open({str(created)!r}, 'w').write('x')\nprint('done')",
        "import shutil\nshutil.rmtree('/usr/share/doc', ignore_errors=False)\nprint('done')",
    ):
        assert _expect_zero_and_no_leftovers(program, _stdio(), sandbox) in ("sandbox_violation", "crash")
    assert victim.read_text() == "keep me" and not created.exists()
    assert Path("/usr/share/doc").is_dir()


def test_no_network_even_to_loopback(sandbox) -> None:
    """A connection to a server listening on the host's loopback never arrives."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted = []

    def accept_loop(stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    stop = threading.Event()
    thread = threading.Thread(target=accept_loop, args=(stop,))
    thread.start()
    try:
        program = (
            f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "s.sendall(b'leak')\nprint('done')"
        )
        assert _expect_zero_and_no_leftovers(program, _stdio(), sandbox) in ("sandbox_violation", "crash")
    finally:
        stop.set()
        thread.join()
        server.close()
    assert accepted == []


def test_environment_secrets_do_not_reach_the_program(sandbox, monkeypatch) -> None:
    """A secret in the parent's environment is not in the program's environ, nor (as root, with a private /proc)
    in any /proc/*/environ the program can read."""
    monkeypatch.setenv("RLVR_SANDBOX_SECRET", SECRET)
    scan_proc = ROOT  # without root, same-user processes are readable through /proc: a documented limit
    program = (
        "import os, glob\nfound = [v for v in os.environ.values() if 'rlvr-test' in v]\n"
        f"for path in glob.glob('/proc/*/environ') if {scan_proc} else []:\n"
        "    try:\n        data = open(path, 'rb').read()\n    except OSError:\n        continue\n"
        "    found += [path] if b'rlvr-test' in data else []\n"
        f"print({SECRET!r} if found else 'nothing')\n"
    )
    assert _expect_zero_and_no_leftovers(program, _stdio(SECRET), sandbox) is None  # ran fine, found nothing


@pytest.mark.slow
def test_daemon_does_not_outlive_the_run(sandbox, tmp_path) -> None:
    """A double-forked, setsid daemon is killed with the run (PID namespace) and never writes its marker."""
    marker = tmp_path / "daemon-was-here"
    tmp_path.chmod(0o777)
    program = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(1.0)\n"
        f"        open({str(marker)!r}, 'w').write('alive')\n        os._exit(0)\n    os._exit(0)\n"
        "print('done')\n"
    )
    error = _expect_zero_and_no_leftovers(program, _stdio("not done"), sandbox)
    assert error in (None, "sandbox_violation")
    time.sleep(1.5)
    assert not marker.exists() and _sandbox_uids_running() == []


def test_audit_hook_alone_without_namespaces(tmp_path) -> None:
    """Where namespaces are unavailable, the audit hook still refuses sockets, forks and outside writes."""
    with Sandbox(
        SandboxLimits(case_timeout_s=1.5), max_concurrency=1, namespaces=False, drop_privileges=False, uid_base=UID_BASE
    ) as box:
        assert box.containment()["namespaces"] == "not requested"
        for program in (
            "import socket\nsocket.socket()",
            "import os\nos.fork()",
            f"open({str(tmp_path / 'x')!r}, 'w')",
            "import ctypes",
        ):
            verdict = check_code(program + "\nprint('done')", _stdio(), sandbox=box)
            assert (verdict.reward, verdict.error) == (0.0, "sandbox_violation"), program
    assert not (tmp_path / "x").exists()


@pytest.mark.skipif(not ROOT, reason="the private folder needs root (a mount namespace)")
def test_working_folder_is_a_private_size_limited_tmpfs() -> None:
    """The folder is a tmpfs of ``folder_mb`` that the program fills up (no space left), not the host's disk; the
    program sees itself as PID 2 of a namespace whose PID 1 is its harness."""
    probe = (
        "import os\ncwd = os.getcwd()\n"
        "kind = [line.split(' - ')[1].split()[0] for line in open('/proc/self/mountinfo') if line.split()[4] == cwd]\n"
        "print(kind, os.getpid(), os.getppid())\n"
    )
    fill = "chunk = b'x' * (1 << 20)\nfor k in range(4):\n    open(f'f{k}', 'wb').write(chunk)\nprint('done')\n"
    limits = SandboxLimits(case_timeout_s=1.5, folder_mb=2)
    with Sandbox(limits, max_concurrency=1, uid_base=UID_BASE) as box:
        run = box.run("stdio", probe, [""])
        assert run.containment["private_folder"] == "tmpfs 2 MB"
        assert (run.cases[0].status, run.cases[0].output) == ("ok", "['tmpfs'] 2 1\n")
        verdict = check_code(fill, _stdio(), sandbox=box)
    assert (verdict.reward, verdict.error) == (0.0, "crash")  # its traceback finds no room in the folder either
