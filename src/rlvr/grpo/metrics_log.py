"""Per-step metrics: ``metrics.jsonl`` (one object per step), TensorBoard events, other sinks (MLflow and W&B, see
rlvr/tracking.py) and a live progress line.

On a terminal the progress line is a live bar. Elsewhere (a log file, a pipe) one line is printed every
``logger.progress_every_n_steps`` steps or ``logger.progress_every_s`` seconds, whichever comes first, plus the
first step, every step with a validation and the last step: a log holds the run's course, not one line per step.

Every line has ``step`` plus NeMo-RL metric names (``train/reward``, ``train/loss``, ``validation/accuracy``,
``timing/train/*``, ...). Step 0 holds the validation before training. On resume the file is cut back to the
steps the checkpoint covers, so after any interruption every step appears exactly once.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from rlvr.errors import CheckpointError


class MetricsLog:
    def __init__(
        self,
        path: Path,
        *,
        total_steps: int,
        tensorboard_dir: Path | None = None,
        progress_bar: bool | None = None,
        sinks: list | None = None,
        progress_every_n_steps: int = 1,
        progress_every_s: float | None = None,
    ):
        self.path = Path(path)
        self._sinks = list(sinks or [])  # e.g. rlvr.tracking.MlflowTracker: each gets every line's log_metrics
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.total_steps = total_steps
        self._tb_dir = tensorboard_dir
        self._tb = None
        self._bar = None
        self._use_bar = sys.stderr.isatty() if progress_bar is None else progress_bar
        self._last_val: float | None = None
        self._every_n, self._every_s = progress_every_n_steps, progress_every_s
        self._printed: tuple[int, float] | None = None  # (step, monotonic time) of the last printed line

    def restart_from(self, step: int | None, saved_line: dict[str, Any] | None = None) -> None:
        """Keep only lines with ``step <= step`` (None: start an empty file).

        ``saved_line`` is step ``step``'s line as stored in its checkpoint: a kill between the checkpoint save
        and the log write leaves the checkpoint without its line, which is then restored from this copy.
        A kill -9 during :meth:`log` can leave a torn last line; it belongs to a step after the checkpoint
        (lines are written after the step's save), so it is dropped instead of failing the resume.
        """
        kept: list[str] = []
        if step is not None and self.path.exists():
            lines = self.path.read_text().splitlines()
            last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
            for number, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    if number == last:
                        break
                    raise CheckpointError(
                        f"{self.path}:{number + 1}: not a JSON line, so the run cannot resume "
                        f"its metrics; delete the file's bad lines or the run folder"
                    ) from None
                if record["step"] <= step:
                    kept.append(line)
        restored = step is not None and saved_line is not None and not any(json.loads(k)["step"] == step for k in kept)
        if restored:
            kept.append(json.dumps({"step": step, **saved_line}))
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(f"{line}\n" for line in kept))
        os.replace(tmp, self.path)
        if self._tb_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step drops events past the checkpoint, mirroring the JSONL cut.
            self._tb = SummaryWriter(str(self._tb_dir), purge_step=(step or 0) + 1 if step else None)
            if restored:
                self._tb_write(saved_line)
        if restored:
            for sink in self._sinks:
                sink.log_metrics({"step": step, **saved_line})
        if self._use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total_steps, initial=step or 0, unit="step", dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        clean = metrics_line(step, metrics)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(clean) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        if self._tb is not None:
            self._tb_write(clean)
        for sink in self._sinks:
            sink.log_metrics(clean)
        self._progress(step, clean)

    def log_samples(self, step: int, columns: list[str], data: list[list[Any]]) -> None:
        """A step's rollout sample table, to every sink that keeps tables (W&B, MLflow)."""
        for sink in self._sinks:
            if data and hasattr(sink, "log_samples"):
                sink.log_samples(step, columns, data)

    def _tb_write(self, line: dict[str, Any]) -> None:
        for key, value in line.items():
            if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self._tb.add_scalar(key, value, line["step"])
        self._tb.flush()

    def _progress(self, step: int, m: dict[str, Any]) -> None:
        if "validation/accuracy" in m:
            self._last_val = m["validation/accuracy"]
        parts = [f"step {step}/{self.total_steps}"]
        if "train/reward" in m:
            parts.append(f"reward {m['train/reward']:.3f}")
        if self._last_val is not None:
            parts.append(f"val acc {self._last_val:.3f}")
        if "timing/train/total_step_time" in m:
            parts.append(f"{m['timing/train/total_step_time']:.2f}s/step")
        if self._bar is not None:
            if step > self._bar.n:
                self._bar.update(step - self._bar.n)
            self._bar.set_postfix_str(" | ".join(parts[1:]))
        elif self._due(step, "validation/accuracy" in m):
            print(" | ".join(parts), flush=True)
            self._printed = (step, time.monotonic())

    def _due(self, step: int, has_validation: bool) -> bool:
        if self._printed is None or has_validation or step >= self.total_steps:
            return True
        last_step, last_time = self._printed
        late = self._every_s is not None and time.monotonic() - last_time >= self._every_s
        return step - last_step >= self._every_n or late

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._bar is not None:
            self._bar.close()


def metrics_line(step: int, metrics: dict[str, Any]) -> dict[str, Any]:
    """The JSON object of one step: ``step`` first, keys sorted, tensors as numbers, non-finite as null."""
    return {"step": step, **{k: _plain(v) for k, v in sorted(metrics.items())}}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
