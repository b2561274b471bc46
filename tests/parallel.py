"""The test suite on two pytest-xdist workers (`make test`: ``-n 2 --dist loadscope``) with its session fixtures built
once per test run, although every worker runs a pytest session of its own.

Two ways, by what a fixture's tests do with it:

- Exclusive fixtures (a Slurm cluster, a Ray instance, a run folder that tests call Snakemake in again, with its lock):
  every module that uses one is one work unit (:class:`SharedFixtureScheduling`), so all of them run on one worker.
  ``--dist loadgroup`` with ``xdist_group`` marks would say the same, but it silently stops grouping on pytest 9.2
  (pytest-dev/pytest-xdist#1386), so the units are made from the modules listed in ``SHARED_FIXTURE_MODULES``; a
  test of such a fixture in a module not listed there is a collection error (:func:`check_shared_fixture_modules`).
- Read-only fixtures (the workflow tests' prepared run): :func:`built_once` builds the folder under a file lock in
  the temporary root that the workers share; whichever worker asks first builds it, the other waits and reuses it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

SHARED_FIXTURE_MODULES = {
    "slurm_cluster": ("tests/slurm/test_launch_on_slurm.py", "tests/slurm/test_tiny_on_slurm.py"),
    "whole_small_run": (
        "tests/workflow/test_chat_template_export.py",
        "tests/workflow/test_report_html.py",
        "tests/workflow/test_secrets_and_stage_configs.py",
    ),
    "ray_cluster": ("tests/unit/distributed/test_ray_dp.py", "tests/unit/distributed/test_ray_workers.py"),
}
UNIT_OF_MODULE = {module: fixture for fixture, modules in SHARED_FIXTURE_MODULES.items() for module in modules}


def check_shared_fixture_modules(items: list[pytest.Item]) -> None:
    """Refuse a test of an exclusive fixture in a module that the scheduler would send to another worker."""
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        for fixture, modules in SHARED_FIXTURE_MODULES.items():
            if fixture in item.fixturenames and module not in modules:
                raise pytest.UsageError(
                    f"{module} uses the session fixture {fixture}: add the module to SHARED_FIXTURE_MODULES in "
                    "tests/parallel.py, so that it runs on the one worker that has the fixture"
                )


def make_scheduler(config: pytest.Config, log):
    """``--dist loadscope`` with the shared-fixture units; any other ``--dist`` keeps xdist's own scheduler."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        """A module per work unit, the modules of one exclusive fixture together. The long end-to-end units go first
        (the shared-fixture ones, then tests/workflow), so that the many short unit-test modules even out the two
        workers at the end instead of one long run starting last."""

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return UNIT_OF_MODULE.get(module, module)

        def _assign_work_unit(self, node) -> None:
            first = min(self.workqueue, key=_start_order)  # the first of the lowest rank, in xdist's order
            self.workqueue.move_to_end(first, last=False)
            super()._assign_work_unit(node)

    return SharedFixtureScheduling(config, log)


def _start_order(unit: str) -> int:
    if unit in SHARED_FIXTURE_MODULES:
        return 0
    return 1 if unit.startswith("tests/workflow/") else 2


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder ``name``, made by ``build(folder)`` once per test run. Under xdist it lives in the run's temporary
    root, which the workers share; the first worker to ask builds it under an exclusive lock, the others wait and
    reuse it (a build that failed leaves no mark, so the next worker tries again and reports its own failure)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    shared = tmp_path_factory.getbasetemp().parent
    folder, done = shared / name, shared / f"{name}.built"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder
