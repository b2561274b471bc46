"""The session's local Ray instance for the distributed tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src"
# Ray gives its raylet a fixed 30 s to register with the GCS (ray._private.node); on a busy shared machine that can
# pass, so a start that timed out is retried instead of failing the tests for the machine's load.
STARTS = 3


@pytest.fixture(scope="session")
def ray_cluster():
    """A private local Ray (2 CPUs; never another process's cluster) for the session; shut down at the end.

    Its workers import ``rlvr`` from this checkout's src/ (first on their PYTHONPATH), not from wherever the
    virtualenv's editable install points."""
    ray = pytest.importorskip("ray")
    path = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
    runtime_env = {"env_vars": {"PYTHONPATH": path}}
    for attempt in range(1, STARTS + 1):
        try:
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env=runtime_env)
            break
        except Exception as exc:  # Ray raises a bare Exception for this
            if "timed out during startup" not in str(exc) or attempt == STARTS:
                raise
            ray.shutdown()
    yield ray
    ray.shutdown()
