"""`-c cpu` end to end: a user's own small HF folder and math JSONL, through the real CLI and Snakemake, on a CPU.

The user gives only policy.model_name and the two data paths (plus a run name). The test shortens the run itself
(2 GRPO steps, 8 new tokens, 8 validation prompts) so it fits in about a minute on an idle 2-core machine. The
policy is random, so it never answers correctly: every group has the same reward, which is exactly the case the
zero-signal guard must shout about (patience 2 here), in the log and in the report. MLflow is on, so the same run
checks the tracking store the controller writes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import nemotron_env
from tests.workflow.user_folder import write_math_data, write_user_hf_folder

pytestmark = pytest.mark.slow

SHORTER = [
    "grpo.max_num_steps=2",
    "policy.generation.max_new_tokens=8",
    "grpo.max_val_samples=8",
    "grpo.val_batch_size=8",
    "grpo.zero_signal_patience=2",
]


def test_cpu_config_runs_a_users_hf_folder_end_to_end(tmp_path):
    model = write_user_hf_folder(tmp_path / "my-model")
    train, val = write_math_data(tmp_path / "data")
    user = [f"policy.model_name={model}", f"data.train.data_path={train}", f"data.validation.data_path={val}"]
    env = nemotron_env()
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlvr.cli.main",
            "steps",
            "run",
            "rl/nemo_rl/rlvr",
            "-c",
            "cpu",
            "--name",
            "laptop",
            *user,
            *SHORTER,
            "logger.mlflow_enabled=true",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    run = tmp_path / "results" / "laptop"
    assert not (tmp_path / "results" / "cpu").exists()
    lines = [json.loads(x) for x in (run / "rlvr" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in lines if "train/reward" in m]
    assert [m["step"] for m in steps] == [1, 2]
    assert all(m["train/frac_groups_zero_std"] == 1.0 for m in steps)
    assert not any(k.startswith("gpu/") for m in lines for k in m)  # monitor_gpus is off on the CPU config
    assert "WARNING [no_learning_signal]" in (run / "logs" / "rlvr.log").read_text()
    report = (run / "report" / "report.md").read_text()
    assert "no learning signal at any step" in report
    hf = run / "megatron_to_hf" / "hf"
    assert (hf / "config.json").is_file() and (hf / "chat_template.jinja").is_file()
    assert json.loads((hf / "config.json").read_text())["tie_word_embeddings"] is True

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'rlvr' / 'mlflow' / 'mlflow.db'}")
    [mlflow_run] = client.search_runs([client.get_experiment_by_name("rlvr").experiment_id])
    assert mlflow_run.info.run_name == "laptop" and mlflow_run.info.status == "FINISHED"
    assert mlflow_run.data.params["policy.generation.backend"] == "hf"
    assert [m.step for m in client.get_metric_history(mlflow_run.info.run_id, "train/reward")] == [1, 2]
    assert mlflow_run.data.tags["rlvr.artifact"].endswith("laptop/rlvr/checkpoint_megatron")
