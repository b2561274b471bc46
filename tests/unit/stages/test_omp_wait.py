"""The stages set how torch's OpenMP threads wait before torch loads (rlvr.utils.omp_wait)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from rlvr.utils import omp_wait
from rlvr.utils.omp_wait import SHORT_SPIN, set_omp_wait


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    return monkeypatch


def test_passive_and_a_short_spin_only_when_cores_are_free(clean_env):
    clean_env.setattr(omp_wait.os, "cpu_count", lambda: 2)
    clean_env.setattr(omp_wait.os, "getloadavg", lambda: (1.4, 1.0, 1.0))
    set_omp_wait(spin_when_idle=True)
    assert (os.environ["OMP_WAIT_POLICY"], os.environ["GOMP_SPINCOUNT"]) == ("PASSIVE", SHORT_SPIN)


def test_busy_machine_or_rlvr_stage_waits_passively(clean_env):
    clean_env.setattr(omp_wait.os, "cpu_count", lambda: 2)
    clean_env.setattr(omp_wait.os, "getloadavg", lambda: (1.6, 1.0, 1.0))
    set_omp_wait(spin_when_idle=True)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and "GOMP_SPINCOUNT" not in os.environ
    clean_env.delenv("OMP_WAIT_POLICY")
    clean_env.setattr(omp_wait.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    set_omp_wait(spin_when_idle=False)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE" and "GOMP_SPINCOUNT" not in os.environ


@pytest.mark.parametrize("name,value", [("OMP_WAIT_POLICY", "ACTIVE"), ("GOMP_SPINCOUNT", "0")])
def test_a_users_own_setting_is_kept(clean_env, name, value):
    clean_env.setenv(name, value)
    set_omp_wait(spin_when_idle=True)
    assert os.environ[name] == value
    assert len({"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ)) == 1


def test_the_stage_module_does_not_load_torch_before_the_stage_runs():
    """libgomp reads the policy when torch loads: importing the stages entry point must not load torch yet."""
    code = "import sys, rlvr.stages.__main__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
