"""Operating-system errors are one line naming the path and the fix: a read-only or full run folder.

The file systems are real: small tmpfs mounts (the test set-up runs as root, as CI does; without root the
mounts cannot be made and these tests fail loudly rather than pass vacuously).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import nemotron_env

CLI = [sys.executable, "-m", "rlvr.cli.main", "steps", "run", "rl/nemo_rl/rlvr", "-c", "tiny"]


@contextlib.contextmanager
def tmpfs(where: Path, *options: str):
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.fail("mounting a tmpfs needs root (CI and the development machine run the suite as root)")
    subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=256k", *options)), "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def run_cli(cwd: Path, output_root: Path) -> subprocess.CompletedProcess:
    env = {**nemotron_env(), "RL_OUTPUT_DIR": str(output_root)}
    return subprocess.run(CLI, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_a_read_only_output_folder_is_one_line(tmp_path):
    with tmpfs(tmp_path / "ro", "ro") as ro:
        proc = run_cli(tmp_path, ro)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert str(ro) in line and ("read-only" in line.lower() or "RL_OUTPUT_DIR" in line)


def test_a_full_output_folder_is_one_line(tmp_path):
    with tmpfs(tmp_path / "full") as full:
        filler = full / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # fill it up, leaving no block for the run's own files
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        os.close(fd)
        proc = run_cli(tmp_path, full)
        leftovers = sorted(p.name for p in full.rglob("*") if p != filler and p.is_file() and p.stat().st_size)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    [line] = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert str(full) in line and "space" in line
    assert leftovers == []  # nothing half-written
