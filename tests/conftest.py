"""Shared test set-up: GPU tests skip without CUDA; everything else runs on a 2-core CPU machine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))
# Processes this one starts without nemotron_env() (the verifier pool's forkserver, which imports rlvr before it
# takes the parent's sys.path) must import this checkout's rlvr too, not an installed copy.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")) if p)


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        has_cuda = False
    if has_cuda:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def isolated_cwd(tmp_path, monkeypatch):
    """Run in an empty folder with RL_OUTPUT_DIR unset, so results/ lands in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RL_OUTPUT_DIR", raising=False)
    return tmp_path


def nemotron_env() -> dict:
    env = dict(os.environ)
    env.pop("RL_OUTPUT_DIR", None)
    env["PYTHONPATH"] = str(REPO_ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env
