"""Step checkpoints of a GRPO run: atomic ``step_N`` folders, retention, and resume that never mixes runs.

Layout under ``checkpointing.checkpoint_dir`` (default ``<run dir>/rlvr/ckpts``)::

    step_N/
      training_info.json   # step, consumed prompts, the ranking metric, the run fingerprint
      policy/model.safetensors  # the weights; with policy.dtensor_cfg.lora_cfg the adapter tensors only
      policy/optimizer.pt  # optimizer + scheduler state (checkpointing.save_optimizer)
      metrics.json         # step N's metrics.jsonl line (restored on resume if the kill came before the log)

A step folder is written as ``tmp_step_N`` and renamed when complete, so a kill -9 leaves either the whole step
or a ``tmp_`` folder that the next start deletes. Unlike NeMo-RL (always resumes from whatever ``step_N`` it
finds; its issue #345), resume requires the same *fingerprint*: a hash of everything that defines the training
(config minus step count and logging, plus the digests of the data and the initial policy). A different
fingerprint starts fresh and moves the old checkpoints aside, saying so.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

_STEP = re.compile(r"^step_(\d+)$")
# Keys that may change between an interrupted run and its resumption without changing what is trained.
_NOT_FINGERPRINTED = {("grpo", "max_num_steps"), ("grpo", "val_period"), ("grpo", "val_at_end"),
                      ("grpo", "val_at_start"), ("checkpointing", "keep_top_k"), ("checkpointing", "save_period")}


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_digest(path: Path) -> str:
    """Digest of every file under ``path`` (names and contents), for the initial policy."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        h.update(file_digest(f).encode())
    return h.hexdigest()


def run_fingerprint(cfg: dict[str, Any], inputs: dict[str, str]) -> str:
    """Hash of the training-defining config sections and the input digests."""
    sections = {k: cfg.get(k) for k in ("grpo", "loss_fn", "policy", "data", "env", "cluster")}
    sections = json.loads(json.dumps(sections))
    for section, key in _NOT_FINGERPRINTED:
        (sections.get(section) or {}).pop(key, None)
    blob = json.dumps({"config": sections, "inputs": inputs}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass
class ResumePoint:
    step: int
    path: Path
    info: dict[str, Any]


class StepCheckpoints:
    """Save, rank, prune and find ``step_N`` checkpoints of one run."""

    def __init__(self, root: Path, *, fingerprint: str, metric_name: str | None, higher_is_better: bool = True,
                 keep_top_k: int | None = None, save_period: int = 1, save_optimizer: bool = True):
        self.root = Path(root)
        self.fingerprint = fingerprint
        self.metric_name = metric_name
        self.higher_is_better = higher_is_better
        self.keep_top_k = keep_top_k
        self.save_period = save_period
        self.save_optimizer = save_optimizer

    def steps(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _STEP.match(p.name)) and p.is_dir())

    def find_resume_point(self, log=print) -> ResumePoint | None:
        """The newest complete step of *this* run; stale temp folders go, a foreign run is moved aside."""
        if not self.root.is_dir():
            return None
        for tmp in self.root.glob("tmp_step_*"):
            shutil.rmtree(tmp, ignore_errors=True)
        steps = self.steps()
        if not steps:
            return None
        newest = self.root / f"step_{steps[-1]}"
        info = json.loads((newest / "training_info.json").read_text())
        if info.get("fingerprint") != self.fingerprint:
            aside = self._aside_name()
            os.replace(self.root, aside)
            log(f"[resume] {self.root} holds checkpoints of a different run (fingerprint {info.get('fingerprint')} "
                f"!= {self.fingerprint}: the config, data or initial policy changed); starting fresh. The old "
                f"checkpoints were moved to {aside}")
            return None
        log(f"[resume] resuming from {newest} (step {steps[-1]}, same run fingerprint {self.fingerprint})")
        return ResumePoint(steps[-1], newest, info)

    def _aside_name(self) -> Path:
        """A free ``<root>.superseded-<time>[-n]`` path: a second mismatch in the same second must not hit the
        first one's folder (``os.replace`` onto a non-empty folder fails)."""
        base = f"{self.root.name}.superseded-{time.strftime('%Y%m%d-%H%M%S')}"
        aside, n = self.root.with_name(base), 1
        while aside.exists():
            aside, n = self.root.with_name(f"{base}-{n}"), n + 1
        return aside

    def save(self, step: int, *, model_state: dict[str, torch.Tensor], optimizer_state: dict | None,
             info: dict[str, Any], extra_files: dict[str, Any] | None = None) -> Path:
        """Write ``step_N`` atomically (``tmp_step_N`` then rename), then apply retention."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp, final = self.root / f"tmp_step_{step}", self.root / f"step_{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "policy").mkdir(parents=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()},
                  str(tmp / "policy" / "model.safetensors"))
        if self.save_optimizer and optimizer_state is not None:
            torch.save(optimizer_state, tmp / "policy" / "optimizer.pt")
        for name, payload in (extra_files or {}).items():
            (tmp / name).write_text(json.dumps(payload, indent=2, sort_keys=True))
        (tmp / "training_info.json").write_text(
            json.dumps({**info, "step": step, "fingerprint": self.fingerprint}, indent=2, sort_keys=True))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self.prune()
        return final

    @staticmethod
    def load(point: ResumePoint) -> tuple[dict[str, torch.Tensor], dict | None]:
        opt_path = point.path / "policy" / "optimizer.pt"
        optimizer = torch.load(opt_path, weights_only=False) if opt_path.exists() else None
        return load_file(str(point.path / "policy" / "model.safetensors")), optimizer

    def _score(self, step: int) -> float:
        info = json.loads((self.root / f"step_{step}" / "training_info.json").read_text())
        value = info.get(self.metric_name) if self.metric_name else None
        if value is None:
            return -math.inf
        return float(value) if self.higher_is_better else -float(value)

    def prune(self) -> list[int]:
        """Keep the latest step and the ``keep_top_k`` best save-period-aligned steps (ties: newer wins)."""
        steps = self.steps()
        if self.keep_top_k is None or not steps:
            return []
        aligned = [s for s in steps if s % self.save_period == 0]
        ranked = sorted(aligned, key=lambda s: (self._score(s), s), reverse=True)
        keep = set(ranked[: self.keep_top_k]) | {steps[-1]}
        removed = [s for s in steps if s not in keep]
        for s in removed:
            shutil.rmtree(self.root / f"step_{s}", ignore_errors=True)
        return removed
