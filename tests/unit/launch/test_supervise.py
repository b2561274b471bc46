"""No process of a run outlives an interrupt: Ctrl-C forwarding to Snakemake's group, parent-death signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import nemotron_env

DRIVER = """
import os
import sys
from rlvr.launch.supervise import run_attached
# The "Snakemake": a shell that starts a grandchild ignoring SIGINT (a stage that will not stop by itself).
job = ["sh", "-c", "trap '' INT; sleep 300 & echo $! > " + sys.argv[1] + "; wait"]
sys.exit(run_attached(job, env=dict(os.environ), grace_s=1.0,
                      on_interrupt=lambda: print("resume hint", flush=True)))
"""


def wait_for(predicate, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its parent counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_sigint_to_the_cli_stops_the_whole_group_and_returns_130(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(pidfile)], stdout=subprocess.PIPE, text=True, env=nemotron_env()
    )
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    grandchild = int(pidfile.read_text())
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=60)
    assert driver.returncode == 130
    assert "resume hint" in out
    wait_for(lambda: not alive(grandchild))  # SIGINT ignored, so SIGTERM (then SIGKILL) took it down


def test_a_killed_launcher_takes_its_child_down(tmp_path):
    pidfile = tmp_path / "child.pid"
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import os, sys\n"
                "from rlvr.launch.lifeline import call_tied\n"
                "call_tied(['sh', '-c', 'echo $$ > " + str(pidfile) + "; exec sleep 300'], dict(os.environ))\n"
            ),
        ],
        env=nemotron_env(),
    )
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    child = int(pidfile.read_text())
    assert alive(child)
    launcher.kill()  # SIGKILL: no handler of the launcher runs
    launcher.wait()
    wait_for(lambda: not alive(child))


def test_a_cli_killed_with_sigkill_still_takes_the_group_down(tmp_path):
    """kill -9 of the CLI runs no handler of its: the guard, tied to it by a parent-death signal, stops the group."""
    pidfile = tmp_path / "grandchild.pid"
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(pidfile)], stdout=subprocess.PIPE, text=True, env=nemotron_env()
    )
    wait_for(lambda: pidfile.exists() and pidfile.read_text().strip())
    grandchild = int(pidfile.read_text())
    driver.kill()
    driver.wait()
    wait_for(lambda: not alive(grandchild), timeout_s=60)
