"""The pre-forked harness server: one report per program even when programs run at once, and a server killed from
outside is replaced on the next program."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rlvr.rewards.code_verifier import check_code
from rlvr.rewards.sandbox import Sandbox, SandboxLimits
from rlvr.rewards.sandbox_server import HarnessServer


@pytest.fixture()
def sandbox():
    with Sandbox(SandboxLimits(case_timeout_s=2.0), max_concurrency=4, uid_base=2_200_000_000) as box:
        yield box


def _echo(k: int) -> tuple[str, dict]:
    """A program that prints ``k`` and its input: the report of another program cannot pass for it."""
    program = f"x = input()\nprint({k}, x)\n"
    return program, {"kind": "stdio", "inputs": [f"in{k}\n"], "outputs": [f"{k} in{k}"], "fn_name": None}


def test_programs_running_at_once_each_get_their_own_report(sandbox) -> None:
    """32 programs, 4 at a time through one server, each scored against its own distinct expected output."""
    with ThreadPoolExecutor(4) as threads:
        verdicts = list(threads.map(lambda k: check_code(*_echo(k), sandbox=sandbox), range(32)))
    assert [(v.reward, v.error) for v in verdicts] == [(1.0, None)] * 32


def test_a_killed_server_is_replaced(sandbox) -> None:
    """SIGKILL of the server between programs: the next program starts a new server and is scored normally."""
    assert check_code(*_echo(1), sandbox=sandbox).reward == 1.0
    (server,) = sandbox._servers.values()
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    verdict = check_code(*_echo(2), sandbox=sandbox)
    assert (verdict.reward, verdict.error) == (1.0, None)
    assert next(iter(sandbox._servers.values())) is not server


def test_the_wall_clock_kill_reaches_the_program_and_spares_the_server(monkeypatch) -> None:
    """Past its wall clock a program is killed by the pid its harness reported (outside its PID namespace): the
    run is a timeout within seconds, no process of its uid survives, and the server takes the next program."""
    uid_base = 2_300_000_000
    run = HarnessServer.run
    monkeypatch.setattr(HarnessServer, "run", lambda self, job, wall_s: run(self, job, 1.0))
    with Sandbox(SandboxLimits(case_timeout_s=20.0), max_concurrency=1, uid_base=uid_base) as box:
        start = time.monotonic()
        stuck = box.run("stdio", "import time\ntime.sleep(30)\n", [""])
        assert stuck.status == "timeout" and time.monotonic() - start < 10.0
        deadline = time.monotonic() + 5.0
        while _uid_running(uid_base) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _uid_running(uid_base)
        assert box.run("stdio", "print(input())", ["again\n"]).cases[0].output == "again\n"


def _uid_running(uid: int) -> bool:
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"\t{uid}\t" in next(line for line in status.read_text().splitlines() if line.startswith("Uid:")):
                return True
        except (OSError, StopIteration):
            continue
    return False
