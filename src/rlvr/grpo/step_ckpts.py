"""Step checkpoints of a GRPO run: atomic ``step_N`` folders, retention, and resume that never mixes runs.

Layout under ``checkpointing.checkpoint_dir`` (default ``<run dir>/rlvr/ckpts``)::

    step_N/
      training_info.json   # step, consumed prompts, the ranking metric, the run fingerprint
      policy/model.safetensors   # the weights (checkpointing.model_save_format: safetensors, the default);
                                 # with policy.dtensor_cfg.lora_cfg the adapter tensors only
      policy/model.pt            # ... or a torch.save'd state dict (model_save_format: torch_save)
      policy/optimizer.pt  # optimizer + scheduler state (checkpointing.save_optimizer)
      metrics.json         # step N's metrics.jsonl line (restored on resume if the kill came before the log)
      manifest.json        # written last: size and SHA-256 of every other file

Tied weights (``lm_head.weight`` *is* ``embed_tokens.weight`` in Llama-3.2-1B or the small Qwen2 models) are
stored once: safetensors refuses two names on one memory, so the second name is recorded as an alias of the
first in the file's metadata, and loading gives both names the *same* tensor again. torch.save keeps the sharing
by itself. Resume reads either format, whatever ``model_save_format`` says now.

A step folder is written as ``tmp_step_N`` and renamed when complete, so a kill -9 leaves either the whole step
or a ``tmp_`` folder that the next start deletes. A step that is complete by name can still be damaged later (a
full disk, a copy cut short, a file truncated by hand): resume checks each step against its manifest, newest
first, skips a damaged one with one line saying which file and why, and resumes from the newest intact step (or
starts fresh, saying so, when none is intact). Unlike NeMo-RL (always resumes from whatever ``step_N`` it
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from rlvr.errors import CheckpointError, ConfigError

_STEP = re.compile(r"^step_(\d+)$")
# Keys that may change between an interrupted run and its resumption without changing what is trained.
_NOT_FINGERPRINTED = {
    ("grpo", "max_num_steps"),
    ("grpo", "val_period"),
    ("grpo", "val_at_end"),
    ("grpo", "val_at_start"),
    ("checkpointing", "keep_top_k"),
    ("checkpointing", "save_period"),
}
# checkpointing.model_save_format -> the weights file of a step folder (NeMo-RL's two values).
WEIGHT_FILES = {"safetensors": "model.safetensors", "torch_save": "model.pt"}
_ALIASES_KEY = "rlvr_aliases"  # safetensors metadata: JSON {alias name: stored name}


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

    def __init__(
        self,
        root: Path,
        *,
        fingerprint: str,
        metric_name: str | None,
        higher_is_better: bool = True,
        keep_top_k: int | None = None,
        save_period: int = 1,
        save_optimizer: bool = True,
        model_save_format: str = "safetensors",
    ):
        if model_save_format not in WEIGHT_FILES:
            raise ConfigError(
                f"checkpointing.model_save_format: {model_save_format!r} is not one of {', '.join(WEIGHT_FILES)}"
            )
        self.model_save_format = model_save_format
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

    def find_resume_point(self, log=print, companions: tuple[Path, ...] = ()) -> ResumePoint | None:
        """The newest intact step of *this* run; stale temp folders go; a foreign run's checkpoints are moved
        aside, together with ``companions`` (its metrics log), into one folder named by its fingerprint."""
        if not self.root.is_dir():
            return None
        for tmp in self.root.glob("tmp_step_*"):
            shutil.rmtree(tmp, ignore_errors=True)
        steps = self.steps()
        if not steps:
            return None
        intact = self._newest_intact(steps, log)
        if intact is None:
            log(f"[resume] no intact checkpoint in {self.root}; starting fresh")
            return None
        newest, info = intact
        if info.get("fingerprint") != self.fingerprint:
            aside = self._aside_name(str(info.get("fingerprint")))
            os.replace(self.root, aside)
            for companion in companions:
                if companion.exists():
                    os.replace(companion, aside / companion.name)
            log(
                f"[resume] {self.root} holds checkpoints of a different run (fingerprint {info.get('fingerprint')} "
                f"!= {self.fingerprint}: the config, data or initial policy changed); starting fresh. The old "
                f"checkpoints{' and metrics' if companions else ''} were moved to {aside}"
            )
            return None
        log(f"[resume] resuming from {newest} (step {info['step']}, same run fingerprint {self.fingerprint})")
        return ResumePoint(int(info["step"]), newest, info)

    def _newest_intact(self, steps: list[int], log) -> tuple[Path, dict[str, Any]] | None:
        """The newest step folder whose files match its manifest, with its training info; damaged ones are
        reported (one line each) and left in place, to be overwritten when training reaches their step again."""
        for step in reversed(steps):
            folder = self.root / f"step_{step}"
            problem = verify_step(folder)
            if problem is None:
                return folder, json.loads((folder / "training_info.json").read_text())
            log(f"[resume] skipping damaged checkpoint {folder}: {problem}")
        return None

    def _aside_name(self, fingerprint: str) -> Path:
        """A free ``<root>.superseded-<fingerprint>[-n]`` path (the same old run superseded twice, after a resume
        of it, must not hit the first folder: ``os.replace`` onto a non-empty folder fails)."""
        base = f"{self.root.name}.superseded-{fingerprint}"
        aside, n = self.root.with_name(base), 1
        while aside.exists():
            aside, n = self.root.with_name(f"{base}-{n}"), n + 1
        return aside

    def save(
        self,
        step: int,
        *,
        model_state: dict[str, torch.Tensor],
        optimizer_state: dict | None,
        info: dict[str, Any],
        extra_files: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``step_N`` atomically (``tmp_step_N`` then rename), then apply retention."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp, final = self.root / f"tmp_step_{step}", self.root / f"step_{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            (tmp / "policy").mkdir(parents=True)
            save_weights(model_state, tmp / "policy" / WEIGHT_FILES[self.model_save_format])
            if self.save_optimizer and optimizer_state is not None:
                torch.save(optimizer_state, tmp / "policy" / "optimizer.pt")
            for name, payload in (extra_files or {}).items():
                (tmp / name).write_text(json.dumps(payload, indent=2, sort_keys=True))
            (tmp / "training_info.json").write_text(
                json.dumps({**info, "step": step, "fingerprint": self.fingerprint}, indent=2, sort_keys=True)
            )
            write_manifest(tmp)
        except Exception as exc:  # noqa: BLE001 - a full disk reaches us as OSError, RuntimeError or SafetensorError
            shutil.rmtree(tmp, ignore_errors=True)  # no half-written step is left behind
            raise _write_error(exc, tmp) from exc
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        self.prune()
        return final

    @staticmethod
    def load(point: ResumePoint) -> tuple[dict[str, torch.Tensor], dict | None]:
        """Weights (tied names share one tensor again) and optimizer state (``None`` when not saved)."""
        opt_path = point.path / "policy" / "optimizer.pt"
        optimizer = torch.load(opt_path, weights_only=False) if opt_path.exists() else None
        return load_weights(point.path / "policy"), optimizer

    def _score(self, step: int) -> float:
        try:
            info = json.loads((self.root / f"step_{step}" / "training_info.json").read_text())
        except (OSError, ValueError):
            return -math.inf  # a damaged step ranks last
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


MANIFEST = "manifest.json"


def _write_error(exc: Exception, folder: Path) -> Exception:
    """An OSError naming the step folder for a write that failed for want of space (torch.save reports a full
    disk as ``RuntimeError: basic_ios::clear``, safetensors as its own error); other errors are passed on."""
    import errno

    if isinstance(exc, OSError) and (exc.filename or exc.errno is None):
        return exc
    try:
        free = shutil.disk_usage(folder.parent).free
    except OSError:
        free = None
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or (free is not None and free < (64 << 20)):
        return OSError(
            errno.ENOSPC,
            f"No space left on device while writing a step checkpoint ({free if free is not None else '?'} bytes free)",
            str(folder),
        )
    if isinstance(exc, OSError):
        return OSError(exc.errno, exc.strerror, str(folder))
    return exc


def write_manifest(folder: Path) -> None:
    """Record the size and SHA-256 of every file under ``folder``; written last, so its presence means complete."""
    files = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": file_digest(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    (folder / MANIFEST).write_text(json.dumps({"files": files}, indent=2, sort_keys=True))


def verify_step(folder: Path) -> str | None:
    """Why ``folder`` cannot be resumed from (``None`` when it can): its manifest's files, sizes and checksums.

    A step written before manifests existed is accepted when its training info reads and its weights file is
    there (its files cannot be checked further)."""
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        try:
            json.loads((folder / "training_info.json").read_text())
        except (OSError, ValueError) as exc:
            return f"training_info.json is unreadable ({exc.__class__.__name__}) and there is no manifest"
        if not any((folder / "policy" / f).is_file() for f in WEIGHT_FILES.values()):
            return "no weights file and no manifest"
        return None
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{MANIFEST} is unreadable ({exc.__class__.__name__})"
    for name, want in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != want["size"]:
            return f"{name} has {size} bytes, the manifest says {want['size']} (truncated or overwritten)"
        if file_digest(path) != want["sha256"]:
            return f"{name} does not match its SHA-256 in the manifest (corrupted)"
    return None


def split_tied(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors to store, {alias: stored name})``: a name that is the very same view as an earlier one (a tied
    weight) becomes an alias; a different view of the same memory is copied, since neither format stores views."""
    stored: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    views: dict[tuple, str] = {}
    storages: set[tuple] = set()
    for name, tensor in state.items():
        tensor = tensor.detach()
        view = (tensor.device, tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
        if view in views:
            aliases[name] = views[view]
            continue
        views[view] = name
        storage = (tensor.device, tensor.untyped_storage().data_ptr())
        if storage in storages:
            tensor = tensor.clone()
        storages.add(storage)
        stored[name] = tensor.contiguous().cpu()
    return stored, aliases


def save_weights(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write ``state`` as safetensors (``.safetensors``) or with ``torch.save`` (``.pt``), each tie stored once."""
    stored, aliases = split_tied(state)
    if path.suffix == ".safetensors":
        save_file(stored, str(path), metadata={_ALIASES_KEY: json.dumps(aliases, sort_keys=True)})
    else:
        # One tensor object under both names: torch.save writes its storage once and torch.load shares it again.
        torch.save({name: stored[aliases.get(name, name)] for name in state}, path)


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The weights of a step's ``policy/`` folder in either format; aliased (tied) names get the same tensor."""
    present = [folder / f for f in WEIGHT_FILES.values() if (folder / f).is_file()]
    if not present:
        raise CheckpointError(
            f"{folder}: no model weights ({' or '.join(WEIGHT_FILES.values())}); the step "
            f"folder is incomplete: delete it to resume from the step before"
        )
    path = present[0]
    try:
        if path.suffix != ".safetensors":
            return torch.load(path, map_location="cpu", weights_only=True)
        state = load_file(str(path))
        with safe_open(str(path), "pt") as fh:
            aliases = json.loads((fh.metadata() or {}).get(_ALIASES_KEY, "{}"))
    except Exception as exc:  # truncated or foreign file: name it instead of a library traceback
        raise CheckpointError(f"{path}: cannot read the step weights: {exc}") from exc
    for alias, name in aliases.items():
        if name not in state:
            raise CheckpointError(f"{path}: tied weight {alias} refers to {name}, which the file does not hold")
        state[alias] = state[name]
    return state
