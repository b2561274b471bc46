"""The run-folder lock: one holder at a time, named when it refuses; a dead holder's lock is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from rlvr.utils.runlock import RunFolderBusy, RunLock
from tests.conftest import nemotron_env

HOLD = """
import sys, time
from rlvr.utils.runlock import RunLock
lock = RunLock(sys.argv[1], what="holder-under-test").acquire()
print("locked", flush=True)
time.sleep(120)
"""


def start_holder(run_dir) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True, env=nemotron_env()
    )
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_holder_is_refused_with_the_first_ones_record(tmp_path):
    holder = start_holder(tmp_path)
    try:
        with pytest.raises(RunFolderBusy) as err:
            RunLock(tmp_path).acquire()
        message = str(err.value)
        assert str(tmp_path) in message and f"pid {holder.pid}" in message and "holder-under-test" in message
        assert f"kill {holder.pid}" in message
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_holder_is_taken_over_and_reported(tmp_path):
    holder = start_holder(tmp_path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lock = RunLock(tmp_path).acquire()
    try:
        note = lock.takeover_note()
        assert note and f"pid {holder.pid}" in note and "no longer running" in note
    finally:
        lock.release()


def test_a_clean_release_leaves_nothing_to_report(tmp_path):
    with RunLock(tmp_path, what="first"):
        pass
    with RunLock(tmp_path) as again:
        assert again.takeover_note() is None


def test_a_child_given_the_descriptor_keeps_the_folder_locked(tmp_path):
    lock = RunLock(tmp_path).acquire()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], pass_fds=(lock.fd,))
    lock.hand_over(child.pid)
    try:
        with pytest.raises(RunFolderBusy, match=f"pid {child.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 30
    while True:  # the kernel drops the lock with the last descriptor
        try:
            RunLock(tmp_path).acquire().release()
            break
        except RunFolderBusy:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_an_unwritable_run_folder_is_one_clear_error(tmp_path):
    if os.geteuid() == 0:
        target = tmp_path / "file"
        target.write_text("not a folder")  # root ignores permission bits: a file in the way fails for root too
        run_dir = target / "run"
    else:
        tmp_path.chmod(0o500)
        run_dir = tmp_path / "run"
    with pytest.raises(Exception) as err:
        RunLock(run_dir).acquire()
    assert "run-folder lock" in str(err.value) or "cannot create" in str(err.value)
