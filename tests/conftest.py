"""Shared test set-up: GPU tests skip without CUDA; everything else runs on a 2-core CPU machine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.parallel import check_shared_fixture_modules, make_scheduler

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))
# Processes this one starts without nemotron_env() (the verifier pool's forkserver, which imports rlvr before it
# takes the parent's sys.path) must import this checkout's rlvr too, not an installed copy.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
# `make test` runs two pytest-xdist workers on the two cores: each worker's torch, and every process it starts (stages,
# Snakemake jobs, Ray workers inherit the variable), takes one intra-op thread, so that the two never oversubscribe.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# The small tiny run that end-to-end tests build (workflow, Slurm, NeMo-Gym): a 10-step SFT policy of a 2-layer
# Llama on small data, and GRPO steps of 4 prompts x 4 samples (16 rollouts: one optimizer step, as tiny's 16 x 16
# is). They need a real Llama, real files and real steps, not accuracy (that is `make test-learning`). One list, so
# that every such run has the same size and one prepared run (tests/workflow/conftest.py) can serve them all.
SMALL_TINY = [
    "tiny.sft.steps=10",
    "tiny.sft.warmup_steps=2",
    "tiny.model.hidden_size=64",
    "tiny.model.intermediate_size=192",
    "tiny.model.num_hidden_layers=2",
    "tiny.data.sft.train_size=1000",
    "tiny.data.sft.val_size=32",
    "tiny.data.rl.train_size=256",
    "tiny.data.rl.val_size=64",
    "grpo.num_prompts_per_step=4",
    "grpo.num_generations_per_prompt=4",
    "policy.train_global_batch_size=16",
    "policy.train_micro_batch_size=16",
    "policy.generation_batch_size=16",
    "policy.logprob_batch_size=16",
]
# For runs whose point is not validation: none before, during or after training.
NO_VALIDATION = ["grpo.val_at_start=false", "grpo.val_at_end=false", "grpo.val_period=0"]


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist (the test extra); unknown to a run without it
def pytest_xdist_make_scheduler(config, log):
    return make_scheduler(config, log)


def pytest_collection_modifyitems(config, items):
    check_shared_fixture_modules(items)
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
