"""Experiment tracking outside metrics.jsonl: MLflow (``logger.mlflow_enabled``), Weights & Biases
(``logger.wandb_enabled``) and GPU metrics (``logger.monitor_gpus``).

MLflow, with NeMo-RL's keys (``logger.mlflow.experiment_name``, ``run_name``, ``tracking_uri``,
``artifact_location``), through the MLflow client library (``pip install 'rlvr[tracking]'``):

* store: ``tracking_uri`` when given (a server ``http://...``, ``databricks``, ``sqlite:///...``: new experiments
  keep artifacts in ``artifacts/`` next to the database file); by default a local store under the run folder,
  ``<run>/rlvr/mlflow/mlflow.db`` with artifacts in ``<run>/rlvr/mlflow/artifacts``.
  It is SQLite rather than MLflow's ``./mlruns`` folder because MLflow 3 refuses to open a file store by default;
  view it with ``mlflow ui --backend-store-uri sqlite:///<run>/rlvr/mlflow/mlflow.db``;
* the run is named ``run_name`` (default: the run folder's name, i.e. ``run.name`` or the config name); its params
  are the run's recorded config flattened to dotted keys (secrets as ``${oc.env:...}`` references, never their
  values), its metrics every ``metrics.jsonl`` line at
  its step (MLflow key rules: a character MLflow refuses, such as ``@`` in ``validation/pass@4``, becomes ``_``);
* at the end the tag ``rlvr.artifact`` holds the final checkpoint_megatron path and ``summary.json`` is logged as
  an artifact; a failed run is marked FAILED. A resumed run (same run folder and fingerprint) continues the same
  MLflow run; steps redone after the checkpoint are logged again at the same step numbers.

W&B, with NeMo-RL's keys (``logger.wandb.project``, ``name``, ``entity``) plus ``mode`` and ``dir``, through the
``wandb`` library (same extra): offline unless ``logger.wandb.mode`` or ``$WANDB_MODE`` says otherwise, so a run
needs no account or network; the run folder is ``<dir>/wandb/offline-run-*`` (``dir`` defaults to ``<run>/rlvr``),
uploaded later with ``wandb sync <that folder>``. Config (the recorded config: secrets as references), every
``metrics.jsonl`` line at its step, the rollout sample table, and at the end ``rlvr.artifact`` in the summary and
``summary.json`` as a run file. A resumed run continues the same W&B run id.

Both trackers also get each step's rollout sample table (rlvr/grpo/rollout_dump.py): W&B as ``rollouts/samples``,
MLflow as the table artifact ``rollouts/step_<N>.json``.

GPU metrics, with ``logger.monitor_gpus`` and CUDA present, per step and per visible device of the controller's
process: ``gpu/<i>/memory_allocated_gib``, ``memory_reserved_gib``, ``max_memory_allocated_gib`` (peak since the
previous step) and ``utilization_pct`` (where torch can read it through NVML). Without CUDA nothing is logged.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from rlvr.errors import ConfigError, UserError

_BAD_KEY_CHARS = re.compile(r"[^\w\-. :/]")
_PARAM_VALUE_LIMIT = 6000  # MLflow's limit on a param value
_RUN_FILE = "mlflow_run.json"
_WANDB_RUN_FILE = "wandb_run.json"
_INSTALL = "pip install 'rlvr[tracking]'"


def mlflow_key(key: str) -> str:
    """``key`` with every character MLflow rejects as ``_`` (``validation/pass@4`` -> ``validation/pass_4``)."""
    return _BAD_KEY_CHARS.sub("_", key)


def flatten_params(cfg: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"grpo.seed": "42", ...}``; lists as JSON; values cut to MLflow's 6,000 characters."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_params(value, f"{name}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
            out[mlflow_key(name)] = text[:_PARAM_VALUE_LIMIT]
    return out


def _default_artifacts(tracking_uri: str | None, local: Path) -> str | None:
    """Artifact root of a new experiment: next to a SQLite store (MLflow's own default is ``./mlruns`` in whatever
    folder the run starts from); a server's own default otherwise."""
    if not tracking_uri:
        return (local / "artifacts").resolve().as_uri()
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///") :]).parent / "artifacts").resolve().as_uri()
    return None


class MlflowTracker:
    """One MLflow run per run folder; a sink of :class:`~rlvr.grpo.metrics_log.MetricsLog`."""

    def __init__(self, settings: dict[str, Any] | None, *, out_dir: Path, default_run_name: str):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserError(
                f"logger.mlflow_enabled is true but MLflow is not installed: {_INSTALL} "
                "(or set logger.mlflow_enabled=false)"
            ) from None
        settings = dict(settings or {})
        self.out_dir = Path(out_dir)
        local = self.out_dir / "mlflow"
        self.tracking_uri = settings.get("tracking_uri") or f"sqlite:///{(local / 'mlflow.db').resolve()}"
        if not settings.get("tracking_uri"):
            local.mkdir(parents=True, exist_ok=True)
        artifacts = settings.get("artifact_location") or _default_artifacts(settings.get("tracking_uri"), local)
        self.experiment_name = settings.get("experiment_name") or "rlvr"
        self.run_name = settings.get("run_name") or default_run_name
        self.run_id: str | None = None
        try:
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            self.experiment_id = self._experiment(artifacts)
        except Exception as exc:  # the store is the user's to fix: unreachable server, bad URI, no permission
            raise ConfigError(
                f"logger.mlflow.tracking_uri={self.tracking_uri!r}: cannot open the MLflow "
                f"experiment {self.experiment_name!r}: {type(exc).__name__}: {exc}. Fix the URI or "
                f"the server, or set logger.mlflow_enabled=false"
            ) from None

    def _experiment(self, artifact_location: str | None) -> str:
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None:
            return found.experiment_id
        return self.client.create_experiment(self.experiment_name, artifact_location=artifact_location)

    def start(self, cfg: dict[str, Any], fingerprint: str) -> str:
        """Start (or, for a resume of the same run, continue) the MLflow run and log the config as params."""
        record = self.out_dir / _RUN_FILE
        previous = json.loads(record.read_text()) if record.is_file() else {}
        if previous.get("fingerprint") == fingerprint and previous.get("tracking_uri") == self.tracking_uri:
            self.run_id = previous["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return self.run_id
        run = self.client.create_run(self.experiment_id, run_name=self.run_name, tags={"rlvr.fingerprint": fingerprint})
        self.run_id = run.info.run_id
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in sorted(flatten_params(cfg).items())]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        record.write_text(
            json.dumps({"run_id": self.run_id, "fingerprint": fingerprint, "tracking_uri": self.tracking_uri}, indent=2)
        )
        return self.run_id

    def log_metrics(self, line: dict[str, Any]) -> None:
        """One ``metrics.jsonl`` line: every finite number at ``line["step"]``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(mlflow_key(k), float(v), now, int(line["step"]))
            for k, v in line.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_samples(self, step: int, columns: list[str], data: list[list[Any]]) -> None:
        """The step's rollout sample table, as MLflow's table artifact ``rollouts/step_<N>.json``."""
        self.client.log_table(
            self.run_id,
            data={c: [row[k] for row in data] for k, c in enumerate(columns)},
            artifact_file=f"rollouts/step_{step}.json",
        )

    def finish(self, *, artifact: Path | None, summary_file: Path | None, failed: bool = False) -> None:
        if self.run_id is None:
            return
        if artifact is not None:
            self.client.set_tag(self.run_id, "rlvr.artifact", str(artifact))
        if summary_file is not None and summary_file.is_file():
            self.client.log_artifact(self.run_id, str(summary_file))
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


class WandbTracker:
    """One W&B run per run folder (offline by default); a sink of :class:`~rlvr.grpo.metrics_log.MetricsLog`."""

    def __init__(self, settings: dict[str, Any], *, out_dir: Path, default_run_name: str):
        try:
            import wandb
        except ImportError:
            raise UserError(
                f"logger.wandb_enabled is true but wandb is not installed: {_INSTALL} "
                "(or set logger.wandb_enabled=false)"
            ) from None
        self.wandb = wandb
        self.out_dir = Path(out_dir)
        self.dir = Path(settings["dir"] or self.out_dir)
        self.project = settings["project"] or "rlvr"
        self.name = settings["name"] or default_run_name
        self.entity = settings["entity"]
        # Offline unless the user chose: a run must never stall on a login prompt or a network it does not have.
        self.mode = settings["mode"] or os.environ.get("WANDB_MODE") or "offline"
        self.run = None

    def start(self, cfg: dict[str, Any], fingerprint: str) -> str:
        """Start (or, for a resume of the same run, continue) the W&B run with the config."""
        record = self.out_dir / _WANDB_RUN_FILE
        previous = json.loads(record.read_text()) if record.is_file() else {}
        resume = previous.get("fingerprint") == fingerprint
        self.dir.mkdir(parents=True, exist_ok=True)
        self.run = self.wandb.init(
            project=self.project,
            name=self.name,
            entity=self.entity,
            mode=self.mode,
            dir=str(self.dir),
            config=cfg,
            id=previous["run_id"] if resume else None,
            resume="allow" if resume else None,
            tags=["rlvr"],
            # console="off": wandb must not wrap stdout/stderr, which carry the progress line and the stage's log;
            # quiet: no history sparklines in the log at the end (the sync hint stays).
            settings=self.wandb.Settings(console="off", quiet=True),
        )
        record.write_text(json.dumps({"run_id": self.run.id, "fingerprint": fingerprint, "dir": self.run.dir}))
        return self.run.id

    def log_metrics(self, line: dict[str, Any]) -> None:
        values = {
            k: v for k, v in line.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        self.run.log({k: v for k, v in values.items() if math.isfinite(v)}, step=int(line["step"]))

    def log_samples(self, step: int, columns: list[str], data: list[list[Any]]) -> None:
        self.run.log({"rollouts/samples": self.wandb.Table(columns=columns, data=data)}, step=step)

    def finish(self, *, artifact: Path | None, summary_file: Path | None, failed: bool = False) -> None:
        if self.run is None:
            return
        if artifact is not None:
            self.run.summary["rlvr.artifact"] = str(artifact)
        if summary_file is not None and summary_file.is_file():
            # A copy in the run's own folder: W&B would otherwise symlink it and warn that later changes need a save.
            kept = Path(self.run.dir) / summary_file.name
            shutil.copyfile(summary_file, kept)
            self.run.save(str(kept), base_path=self.run.dir, policy="now")
        self.run.finish(exit_code=1 if failed else 0)
        self.run = None


def trackers(logger: dict[str, Any], *, out_dir: Path, run_name: str) -> list:
    """The trackers ``logger.*`` turns on (MLflow, W&B), each ready to ``start``."""
    out: list = []
    if logger["mlflow_enabled"]:
        out.append(MlflowTracker(logger["mlflow"], out_dir=out_dir, default_run_name=run_name))
    if logger["wandb_enabled"]:
        out.append(WandbTracker(logger["wandb"], out_dir=out_dir, default_run_name=run_name))
    return out


def gpu_metrics(cuda=None) -> dict[str, float]:
    """Memory (GiB) and utilisation of each visible CUDA device; ``{}`` without CUDA. Resets the peak counters."""
    if cuda is None:
        import torch

        cuda = torch.cuda
    if not cuda.is_available():
        return {}
    gib = float(1 << 30)
    out: dict[str, float] = {}
    for i in range(cuda.device_count()):
        out[f"gpu/{i}/memory_allocated_gib"] = cuda.memory_allocated(i) / gib
        out[f"gpu/{i}/memory_reserved_gib"] = cuda.memory_reserved(i) / gib
        out[f"gpu/{i}/max_memory_allocated_gib"] = cuda.max_memory_allocated(i) / gib
        cuda.reset_peak_memory_stats(i)
        try:
            out[f"gpu/{i}/utilization_pct"] = float(cuda.utilization(i))
        except Exception:  # needs NVML (pynvml); memory figures are still worth logging without it
            pass
    return out
