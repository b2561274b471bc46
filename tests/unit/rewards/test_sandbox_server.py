"""The pre-forked harness server: one report per program even when programs run at once, and a server killed from
outside is replaced on the next program."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlvr.rewards.code_verifier import check_code
from rlvr.rewards.sandbox import Sandbox, SandboxLimits


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
