"""MLflow tracking (read back with MlflowClient from the store it wrote), W&B (its offline run folder read back),
the progress line off a terminal, and the GPU metrics (a mocked CUDA)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr.errors import ConfigError
from rlvr.grpo.metrics_log import MetricsLog
from rlvr.tracking import MlflowTracker, WandbTracker, flatten_params, gpu_metrics, mlflow_key
from tests.unit.wandb_records import read_offline_run

pytest.importorskip("mlflow", reason="the tracking extra is not installed")  # make setup installs it
from mlflow.tracking import MlflowClient  # noqa: E402

CFG = {
    "grpo": {"seed": 42, "num_prompts_per_step": 4},
    "policy": {"scheduler": [{"milestones": [10]}]},
    "logger": {"mlflow": {"experiment_name": "exp"}},
    "env": {"nemo_gym": {"api_key": "${oc.env:GYM_KEY}"}},
}


TABLE = (["step", "prompt", "response", "reward", "reward/fmt"], [[1, "1+1=", "\\boxed{2}", 1.0, 1.0]])


def _log_two_steps(out: Path, settings: dict, fingerprint: str = "fp-1", cls=MlflowTracker):
    tracker = cls(settings, out_dir=out, default_run_name="my-run")
    tracker.start(CFG, fingerprint)
    log = MetricsLog(out / "metrics.jsonl", total_steps=2, progress_bar=False, sinks=[tracker])
    log.restart_from(None)
    log.log(0, {"validation/accuracy": 0.25, "validation/pass@4": 0.5})
    log.log_samples(1, *TABLE)
    log.log(1, {"train/reward": 0.5, "train/loss": float("nan"), "validation/accuracy": 0.5})
    log.close()
    (out / "summary.json").write_text(json.dumps({"final_step": 1}))
    tracker.finish(artifact=out / "checkpoint_megatron", summary_file=out / "summary.json")
    return tracker


def test_the_local_store_under_the_run_folder_holds_params_metrics_and_the_artifact(tmp_path):
    out = tmp_path / "results" / "my-run" / "rlvr"
    out.mkdir(parents=True)
    tracker = _log_two_steps(out, {"experiment_name": "exp"})
    assert (out / "mlflow" / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow' / 'mlflow.db'}")
    run = client.get_run(tracker.run_id)
    assert run.info.run_name == "my-run" and run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "exp"
    params = run.data.params
    assert params["grpo.seed"] == "42" and params["policy.scheduler"] == '[{"milestones": [10]}]'
    # The recorded config holds a secret as its reference: the value never reaches the tracking store.
    assert params["env.nemo_gym.api_key"] == "${oc.env:GYM_KEY}"
    history = client.get_metric_history(tracker.run_id, "validation/accuracy")
    assert [(m.step, m.value) for m in history] == [(0, 0.25), (1, 0.5)]
    assert [m.value for m in client.get_metric_history(tracker.run_id, "validation/pass_4")] == [0.5]
    assert "train/loss" not in run.data.metrics  # NaN is null in metrics.jsonl and absent here
    assert run.data.tags["rlvr.artifact"] == str(out / "checkpoint_megatron")
    assert sorted(f.path for f in client.list_artifacts(tracker.run_id)) == ["rollouts", "summary.json"]
    # The rollout sample table: MLflow's table artifact (columns + data), what the UI's table view reads.
    table = json.loads(Path(client.download_artifacts(tracker.run_id, "rollouts/step_1.json", str(out))).read_text())
    assert table["columns"] == TABLE[0] and table["data"] == TABLE[1]


def test_a_given_tracking_uri_and_a_resume_continue_the_same_run(tmp_path, monkeypatch):
    """tracking_uri is used as given (artifacts next to a SQLite store, never ./mlruns in the current folder); the
    same run folder and fingerprint resume the MLflow run, another fingerprint (a fresh start) opens a new one."""
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    uri = f"sqlite:///{tmp_path / 'central.db'}"
    out = tmp_path / "run" / "rlvr"
    out.mkdir(parents=True)
    first = _log_two_steps(out, {"experiment_name": "exp", "tracking_uri": uri, "run_name": "named"})
    assert not (out / "mlflow").exists()
    again = MlflowTracker({"experiment_name": "exp", "tracking_uri": uri}, out_dir=out, default_run_name="x")
    assert again.start(CFG, "fp-1") == first.run_id
    other = MlflowTracker({"experiment_name": "exp", "tracking_uri": uri}, out_dir=out, default_run_name="x")
    assert other.start(CFG, "fp-2") != first.run_id
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(first.run_id).info.run_name == "named"
    assert (tmp_path / "artifacts").is_dir() and not any((tmp_path / "cwd").iterdir())


def test_an_unusable_tracking_uri_is_a_config_error(tmp_path):
    """A misspelled scheme: one ConfigError naming the key and the fix, before any training."""
    with pytest.raises(ConfigError, match="logger.mlflow.tracking_uri='htp://localhost:5000'.*mlflow_enabled=false"):
        MlflowTracker({"tracking_uri": "htp://localhost:5000"}, out_dir=tmp_path, default_run_name="r")


def test_keys_and_params():
    assert (
        mlflow_key("validation/pass@4") == "validation/pass_4"
        and mlflow_key("timing/train/total") == "timing/train/total"
    )
    assert flatten_params({"a": {"b": None, "c": {}}, "d": "x" * 7000}) == {"a.b": "None", "a.c": "{}", "d": "x" * 6000}


class FakeCuda:
    """torch.cuda's memory API for two devices; device 1 has no NVML (utilization raises)."""

    def __init__(self, available: bool = True):
        self.available, self.resets = available, []

    def is_available(self):
        return self.available

    def device_count(self):
        return 2

    def memory_allocated(self, i):
        return (i + 1) * (1 << 30)

    def memory_reserved(self, i):
        return (i + 2) * (1 << 30)

    def max_memory_allocated(self, i):
        return (i + 3) * (1 << 29)

    def reset_peak_memory_stats(self, i):
        self.resets.append(i)

    def utilization(self, i):
        if i == 1:
            raise ModuleNotFoundError("pynvml")
        return 87


def test_gpu_metrics_per_device_and_nothing_on_cpu():
    cuda = FakeCuda()
    metrics = gpu_metrics(cuda)
    assert metrics == {
        "gpu/0/memory_allocated_gib": 1.0,
        "gpu/0/memory_reserved_gib": 2.0,
        "gpu/0/max_memory_allocated_gib": 1.5,
        "gpu/0/utilization_pct": 87.0,
        "gpu/1/memory_allocated_gib": 2.0,
        "gpu/1/memory_reserved_gib": 3.0,
        "gpu/1/max_memory_allocated_gib": 2.0,
    }
    assert cuda.resets == [0, 1]  # the next step's peak is its own
    assert gpu_metrics(FakeCuda(available=False)) == {}


WANDB_SETTINGS = {"project": "proj", "name": None, "entity": None, "mode": None, "dir": None}


def _offline_run(out: Path) -> Path:
    [folder] = (out / "wandb").glob("offline-run-*")
    return folder


def test_wandb_writes_an_offline_run_with_config_metrics_table_and_artifact(tmp_path, monkeypatch):
    """No WANDB_MODE: offline, under <run>/rlvr/wandb; the run folder, read back record by record, holds the
    recorded config (a secret as its reference), each metrics line at its step, the sample table and the artifact."""
    pytest.importorskip("wandb", reason="the tracking extra is not installed")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "results" / "my-run" / "rlvr"
    out.mkdir(parents=True)
    tracker = _log_two_steps(out, WANDB_SETTINGS, cls=WandbTracker)
    run = read_offline_run(_offline_run(out))
    assert run["run"].project == "proj" and run["run"].display_name == "my-run"
    assert run["config"]["grpo"] == {"seed": 42, "num_prompts_per_step": 4}
    assert run["config"]["env"]["nemo_gym"]["api_key"] == "${oc.env:GYM_KEY}"
    steps = {h["_step"]: h for h in run["history"]}
    assert steps[0]["validation/accuracy"] == 0.25 and steps[0]["validation/pass@4"] == 0.5
    assert steps[1]["train/reward"] == 0.5 and "train/loss" not in steps[1]  # NaN (null) is not logged
    assert steps[1]["rollouts/samples/_type"] == "table-file" and steps[1]["rollouts/samples/nrows"] == 1
    table = json.loads((_offline_run(out) / "files" / steps[1]["rollouts/samples/path"]).read_text())
    assert table["columns"] == TABLE[0] and table["data"] == TABLE[1]
    assert run["summary"]["rlvr.artifact"] == str(out / "checkpoint_megatron")
    assert "summary.json" in run["files"]
    # A resume of the same run (same fingerprint) continues its W&B run id.
    again = WandbTracker(WANDB_SETTINGS, out_dir=out, default_run_name="x")
    assert again.start(CFG, "fp-1") == json.loads((out / "wandb_run.json").read_text())["run_id"]
    again.finish(artifact=None, summary_file=None)
    assert tracker.run is None


def test_a_user_set_wandb_mode_is_kept(tmp_path, monkeypatch):
    """WANDB_MODE=disabled from the user wins over the offline default: nothing is written."""
    pytest.importorskip("wandb", reason="the tracking extra is not installed")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker = WandbTracker({**WANDB_SETTINGS, "dir": str(tmp_path / "wb")}, out_dir=tmp_path, default_run_name="r")
    assert tracker.mode == "disabled"
    assert WandbTracker({**WANDB_SETTINGS, "mode": "offline"}, out_dir=tmp_path, default_run_name="r").mode == "offline"
    tracker.start(CFG, "fp")
    tracker.log_metrics({"step": 1, "train/reward": 1.0})
    tracker.finish(artifact=None, summary_file=None)
    assert not (tmp_path / "wb" / "wandb").exists() or not any((tmp_path / "wb" / "wandb").glob("offline-run-*"))


def _progress_lines(tmp_path, capsys, steps, **every) -> list[int]:
    log = MetricsLog(tmp_path / "m.jsonl", total_steps=max(steps), progress_bar=False, **every)
    log.restart_from(None)
    for step in steps:
        log.log(step, {"train/reward": 0.5, **({"validation/accuracy": 0.5} if step == 5 else {})})
    return [int(line.split()[1].split("/")[0]) for line in capsys.readouterr().out.splitlines()]


def test_progress_off_a_terminal_is_one_line_every_n_steps(tmp_path, capsys):
    """Every 3 steps, plus the first, the validation step (5) and the last; nothing in between."""
    assert _progress_lines(tmp_path, capsys, range(0, 12), progress_every_n_steps=3) == [0, 3, 5, 8, 11]


def test_progress_off_a_terminal_also_prints_when_seconds_pass(tmp_path, capsys, monkeypatch):
    """Step count far away, but 60 s since the last line: print (a clock that advances 25 s per step)."""
    clock = iter(range(0, 10_000, 25))
    monkeypatch.setattr("rlvr.grpo.metrics_log.time.monotonic", lambda: next(clock))
    assert _progress_lines(tmp_path, capsys, range(1, 9), progress_every_n_steps=100, progress_every_s=60) == [
        1,
        4,
        5,
        8,
    ]
