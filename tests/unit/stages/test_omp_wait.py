"""The rlvr stage makes torch's OpenMP threads wait passively, and can: torch is not loaded before it does."""

from __future__ import annotations

import os
import subprocess
import sys

from rlvr.stages.__main__ import passive_omp_wait


def test_passive_by_default_and_an_explicit_value_is_kept(monkeypatch):
    """No OMP_WAIT_POLICY: PASSIVE; a user's own value (ACTIVE) stays."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    passive_omp_wait()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    passive_omp_wait()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_stage_module_does_not_load_torch_before_the_stage_runs():
    """libgomp reads the policy when torch loads: importing the stages entry point must not load torch yet."""
    code = "import sys, rlvr.stages.__main__; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
