"""What a GRPO run writes besides its metrics: step checkpoints with their metrics lines, the final artifact and
the run summary.

:class:`RunSaving` is mixed into :class:`~rlvr.grpo.controller.GRPOController`. A step checkpoint carries its
metrics.jsonl line (:data:`STEP_METRICS`) and the lines before it (:data:`STEP_HISTORY`): Snakemake deletes a
re-run job's outputs, metrics.jsonl too, and resume (``GRPOController.fit``) writes them back. It reads the
controller's ``ckpt_enabled``, ``ckpts``, ``consumed_prompts``, ``workers``, ``metrics``, ``paths``,
``source_dtype``, ``base_model`` and ``signal_guard``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rlvr.grpo.metrics_log import metrics_line, read_metrics
from rlvr.utils.atomic import atomic_file

STEP_METRICS = "metrics.json"  # a step checkpoint's copy of its metrics.jsonl line
STEP_HISTORY = "metrics_history.json"  # ... and of the lines before it (Snakemake deletes a re-run job's outputs)


class RunSaving:
    """Step checkpoints and the run's final outputs, for :class:`~rlvr.grpo.controller.GRPOController`."""

    def _maybe_save(self, step: int, last: bool, metrics: dict[str, float]) -> float | None:
        if not self.ckpt_enabled or not (last or step % self.ckpts.save_period == 0):
            return None
        timer = time.perf_counter()
        info = {"consumed_prompts": self.consumed_prompts, "total_steps": step}
        name = self.ckpts.metric_name
        if name:
            prefix, _, key = name.partition(":")
            value = metrics.get(f"{'validation' if prefix == 'val' else 'train'}/{key}")
            if value is not None:
                info[name] = value
        model_state, optimizer_state = self.workers.state()
        # The step's metrics line travels with the checkpoint: metrics.jsonl is written after the save.
        self.ckpts.save(
            step,
            model_state=model_state,
            optimizer_state=optimizer_state,
            info=info,
            extra_files={
                STEP_METRICS: metrics_line(step, metrics),
                STEP_HISTORY: read_metrics(self.metrics.path),
            },
        )
        return time.perf_counter() - timer

    def _finish(self, step: int, seconds: float) -> dict[str, Any]:
        artifact = self.paths.ckpt
        self.workers.save_artifact(
            artifact,
            iteration=step,
            source_dtype=self.source_dtype,
            extra={"rlvr": {"steps": step, "fingerprint": self.ckpts.fingerprint}},
            adapter_dir=self.paths.lora_adapter,
            base_model=self.base_model,
        )
        history = [m for m in read_jsonl(self.paths.metrics) if "validation/accuracy" in m]
        summary = {
            "final_step": step,
            "seconds": round(seconds, 2),
            "artifact": str(artifact),
            "fingerprint": self.ckpts.fingerprint,
            "zero_signal": self.signal_guard.summary(),
            "validation": [{"step": m["step"], "accuracy": m["validation/accuracy"]} for m in history],
        }
        with atomic_file(self.paths.summary) as fh:
            json.dump(summary, fh, indent=2)
        return summary


def read_json(path: Path) -> dict | None:
    """The JSON value in ``path``; None when there is no such file."""
    return json.loads(path.read_text()) if path.exists() else None


def read_jsonl(path: Path) -> list[dict]:
    """The JSON lines of ``path`` (blank lines skipped); [] when there is no such file."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
