"""Set-up of the Slurm tests: a real single-node Slurm, installed and started once per session, always stopped.

The cluster is started only when a test asks for it (``slurm_cluster``), so a run that deselects ``-m slurm``
pays nothing. Without root or apt-get (a developer laptop) the tests skip; under CI (``CI`` set) they fail
instead, so that a broken install cannot pass as green.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.slurm.local_slurm import LocalSlurm, SlurmUnavailable, ensure_installed


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalSlurm]:
    try:
        ensure_installed()
    except SlurmUnavailable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the Slurm tests must run in CI: {exc}")
        pytest.skip(str(exc))
    # Not under pytest's basetemp: that is 0700 root, and munged (user munge) must reach its files.
    prefix = Path(tempfile.mkdtemp(prefix="rlvr-slurm-", dir="/tmp"))
    prefix.chmod(0o755)
    cluster = LocalSlurm(prefix)
    try:
        cluster.configure()
        cluster.start()
        yield cluster
    finally:
        leftovers = cluster.stop()
        if not leftovers:
            shutil.rmtree(prefix, ignore_errors=True)
    assert not leftovers, f"processes left after stopping the test cluster: {leftovers}"
