"""The rlvr stage as Snakemake runs it: kill -9 and resume, config changes, and the reward pre-flight.

``python -m rlvr.stages rlvr`` runs in subprocesses, exactly as the rule's shell command does, on the session's
prepared small tiny run (tests/workflow/conftest.py: tiny data, a 10-step SFT policy, its checkpoint_megatron and
rl_prep, made through the real CLI), with the 6-step GRPO run of ``STAGE_RUN`` (its overlong penalty supplies the
reward spread that makes the weights move). About 1.5 minutes on two busy cores.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlvr.config import load_step_config
from rlvr.stages.stage_config import stage_config_path, write_stage_configs
from rlvr.steps.index import resolve_step
from tests.conftest import SMALL_TINY, nemotron_env
from tests.workflow.conftest import STEP, metric_steps, rlvr_command, run_stage

pytestmark = pytest.mark.slow


def run_and_kill_at_step(command: list[str], metrics: Path, step: int, log: Path) -> None:
    """Start the stage in its own process group and SIGKILL the group once ``step`` is in metrics.jsonl."""
    with open(log, "w") as out:  # a file, not a pipe: nobody reads while it runs, and a full pipe would block it
        proc = subprocess.Popen(
            command, env=nemotron_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and proc.poll() is None:
                if metrics.exists() and any(
                    json.loads(line)["step"] >= step for line in metrics.read_text().splitlines() if line.endswith("}")
                ):
                    break
                time.sleep(0.02)
            assert proc.poll() is None, f"the run ended before step {step} was logged:\n{log.read_text()[-3000:]}"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the stage and its reward workers, as a node failure would
            proc.wait(timeout=30)


def final_weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "rlvr" / "ckpts" / f"step_{step}" / "policy" / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(prepared, tmp_path_factory) -> Path:
    """An uninterrupted 6-step run (checkpoints at steps 2, 4, 6)."""
    run_dir = tmp_path_factory.mktemp("reference")
    run_stage(rlvr_command(prepared, run_dir))
    return run_dir


def test_killed_run_resumes_exactly(prepared, reference, tmp_path):
    """kill -9 after step 3 → the re-run resumes from step_2; metrics 0..6 once; weights = uninterrupted run."""
    resumed = tmp_path / "resumed"
    command = rlvr_command(prepared, resumed)
    run_and_kill_at_step(command, resumed / "rlvr" / "metrics.jsonl", 3, tmp_path / "killed.log")
    assert 3 in metric_steps(resumed)
    assert (resumed / "rlvr" / "ckpts" / "step_2").is_dir() and not (resumed / "rlvr" / "ckpts" / "step_4").exists()
    assert not (resumed / "rlvr" / "summary.json").exists()

    log = run_stage(command)
    assert "[resume] resuming from" in log and "step_2 (step 2" in log
    assert metric_steps(resumed) == [0, 1, 2, 3, 4, 5, 6]
    assert json.loads((resumed / "rlvr" / "summary.json").read_text())["final_step"] == 6

    # Same seed, same data order (consumed prompts), same per-step sampling seeds: identical to the bit.
    ref_w, res_w = final_weights(reference, 6), final_weights(resumed, 6)
    assert ref_w.keys() == res_w.keys()
    for name in ref_w:
        torch.testing.assert_close(res_w[name], ref_w[name], rtol=0, atol=0, msg=name)
    moved = max(float((ref_w[k] - final_weights(reference, 2)[k]).abs().max()) for k in ref_w)
    assert moved > 1e-4, "the policy did not change between steps 2 and 6: the comparison would be vacuous"
    ref_m = [json.loads(line) for line in (reference / "rlvr" / "metrics.jsonl").read_text().splitlines()]
    res_m = [json.loads(line) for line in (resumed / "rlvr" / "metrics.jsonl").read_text().splitlines()]
    for key in (
        "train/loss",
        "train/reward",
        "train/grad_norm",
        "train/mean_gen_tokens_per_sample",
        "validation/accuracy",
    ):
        assert [m.get(key) for m in res_m] == [m.get(key) for m in ref_m], key
    assert all(m["train/grad_norm"] > 0 for m in ref_m[1:])


def test_changed_config_does_not_resume(prepared, reference, tmp_path):
    """A different loss_fn.ratio_clip_max is a different run: fresh start, said so, old checkpoints kept aside."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    log = run_stage(rlvr_command(prepared, run_dir, "grpo.max_num_steps=1", "loss_fn.ratio_clip_max=0.25"))
    assert "holds checkpoints of a different run" in log and "starting fresh" in log
    assert "[resume] resuming from" not in log
    assert metric_steps(run_dir) == [0, 1]
    [aside] = [p for p in (run_dir / "rlvr").iterdir() if p.name.startswith("ckpts.superseded-")]
    # The old run's checkpoints and its metrics, together, under its fingerprint: nothing of it is lost.
    assert sorted(p.name for p in aside.iterdir()) == ["metrics.jsonl", "step_2", "step_4", "step_6"]
    assert [json.loads(line)["step"] for line in (aside / "metrics.jsonl").read_text().splitlines()] == list(range(7))
    assert sorted(p.name for p in (run_dir / "rlvr" / "ckpts").iterdir()) == ["step_1"]
    assert json.loads((run_dir / "rlvr" / "summary.json").read_text())["final_step"] == 1


def test_step_line_lost_by_a_kill_after_the_save_is_restored(prepared, reference, tmp_path):
    """Killed between saving step_6 and logging it: the re-run restores line 6 from the checkpoint, once."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    metrics = run_dir / "rlvr" / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("".join(line + "\n" for line in lines[:-1]))
    (run_dir / "rlvr" / "summary.json").unlink()
    log = run_stage(rlvr_command(prepared, run_dir))
    assert "step_6 (step 6" in log
    assert metric_steps(run_dir) == [0, 1, 2, 3, 4, 5, 6]
    restored, original = json.loads(metrics.read_text().splitlines()[-1]), json.loads(lines[-1])
    assert restored == {k: v for k, v in original.items() if k != "timing/train/checkpointing"}
    assert json.loads((run_dir / "rlvr" / "summary.json").read_text())["final_step"] == 6


def test_reward_preflight_rejects_unparseable_ground_truth(prepared, tmp_path):
    """A ground truth math-verify cannot parse fails the pre-flight (exit 2), names the row, writes no report."""
    rows = [json.loads(line) for line in (prepared / "rl_prep" / "val.jsonl").read_text().splitlines()][:6]
    rows[4]["ground_truth"] = "}"  # unbalanced: math-verify finds no gold target
    data = tmp_path / "rl_prep"
    data.mkdir()
    (data / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = tmp_path / "reward_preflight" / "report.json"
    cfg = load_step_config(resolve_step(STEP), "tiny", SMALL_TINY).engine_view()
    write_stage_configs(tmp_path, {"reward_preflight": {"env": cfg["env"]}})
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "rlvr.stages",
            "reward_preflight",
            "--config",
            str(stage_config_path(tmp_path, "reward_preflight")),
            "--rows",
            str(data / "val.jsonl"),
            "--out",
            str(report),
        ],
        env=nemotron_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "reward_function_not_validated" in proc.stderr and "Traceback" not in proc.stderr
    assert "row 4 (math): reference '}'" in proc.stderr
    assert "row 3 " not in proc.stderr
    assert not report.exists() and not report.parent.exists()


def test_reward_preflight_calls_each_reward_function(prepared, tmp_path):
    """The pre-flight stage with env.reward_functions: a function of the user's that raises stops the run (exit 2)
    naming it, the row and the error; a sound one passes, every probe scored by each function."""
    data = tmp_path / "rl_prep"
    data.mkdir()
    rows = (prepared / "rl_prep" / "val.jsonl").read_text().splitlines()[:3]
    (data / "val.jsonl").write_text("".join(f"{line}\n" for line in rows))
    report = tmp_path / "reward_preflight" / "report.json"
    outcomes = {}
    for bad in ("raises", "exact"):
        functions = (
            "env.reward_functions=[{name: correct, function: verifier, weight: 1},"
            f" {{name: mine, function: 'tests.unit.rewards.reward_fns:{bad}', weight: 1}}]"
        )
        cfg = load_step_config(resolve_step(STEP), "tiny", [*SMALL_TINY, functions]).engine_view()
        write_stage_configs(tmp_path, {"reward_preflight": {"env": cfg["env"]}})
        command = ["reward_preflight", "--config", str(stage_config_path(tmp_path, "reward_preflight"))]
        outcomes[bad] = subprocess.run(
            [sys.executable, "-m", "rlvr.stages", *command, "--rows", str(data / "val.jsonl"), "--out", str(report)],
            env=nemotron_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
    failed, passed = outcomes["raises"], outcomes["exact"]
    assert failed.returncode == 2 and "reward_function_not_validated" in failed.stderr
    assert "scored mine: ground_truth" in failed.stderr and "ValueError: my reward has a bug" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert passed.returncode == 0, passed.stderr
    assert json.loads(report.read_text()) == {"rows": 3, "scored": 12, "ok": True}  # 3 rows × 2 probes × 2


def test_positive_example_nll_gets_the_rewards(prepared, tmp_path):
    """loss_fn.positive_example_nll_weight (VAPO) reads each sample's reward from the training batch: a run with it
    on trains (it used to stop at the first step for want of 'rewards') and reports the term."""
    run_dir = tmp_path / "run"
    run_stage(
        rlvr_command(
            prepared,
            run_dir,
            "grpo.max_num_steps=2",
            "checkpointing.enabled=false",
            "loss_fn.positive_example_nll_weight=0.5",
        )
    )
    lines = [json.loads(line) for line in (run_dir / "rlvr" / "metrics.jsonl").read_text().splitlines()]
    trained = [line for line in lines if line["step"] > 0]
    assert [line["step"] for line in trained] == [1, 2]
    assert all("train/positive_nll_loss" in line and line["train/num_optimizer_steps"] == 1 for line in trained)


def test_a_run_without_learning_signal_stops_when_told(prepared, tmp_path):
    """Without the overlong penalty the 10-step SFT policy almost never answers right: most steps have no group
    with any reward spread (a lucky step may have one). With grpo.stop_on_zero_signal the stage stops at the first
    step that completes zero_signal_patience (2) such steps in a row: exit 2, one message naming the switch (no
    traceback), every step logged, no final artifact."""
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        rlvr_command(
            prepared,
            run_dir,
            "grpo.reward_shaping.enabled=false",
            "grpo.zero_signal_patience=2",
            "grpo.stop_on_zero_signal=true",
            "checkpointing.enabled=false",
        ),
        env=nemotron_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[no_learning_signal]" in proc.stderr and "grpo.stop_on_zero_signal" in proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [json.loads(line) for line in (run_dir / "rlvr" / "metrics.jsonl").read_text().splitlines()]
    fracs = [m["train/frac_groups_zero_std"] for m in lines if m["step"] > 0]
    assert fracs[-2:] == [1.0, 1.0]
    assert not any(a == b == 1.0 for a, b in zip(fracs[:-2], fracs[1:-1]))  # ... at the first streak of 2
    assert not (run_dir / "rlvr" / "checkpoint_megatron").exists()


def test_weighted_custom_rewards_dumps_and_trackers_through_the_stage(prepared, tmp_path):
    """Issue 17 through the rule's command: env.reward_functions = the verifier + the format reward (a regex) + a
    callable from a module of the user's (imported in the verifier workers), W&B (offline) and MLflow on, full
    rollout dumps. Each function is logged on its own, the dumped reward is their weighted sum, and the trackers
    hold the metrics and the sample table."""
    run_dir = tmp_path / "run"
    functions = (
        "env.reward_functions=[{name: correct, function: verifier, weight: 1.0},"
        ' {name: fmt, function: format, weight: 0.5, kwargs: {pattern: "^-?[0-9]+$"}},'
        " {name: len, function: 'tests.unit.rewards.reward_fns:prompt_length', weight: 0.01}]"
    )
    overrides = ["grpo.max_num_steps=2", functions, "logger.rollout_dumps=full", "logger.rollout_dump_rows=4"]
    overrides += [  # 4 × 16 samples: seconds
        "grpo.num_prompts_per_step=4",
        "grpo.num_generations_per_prompt=16",
        "policy.train_global_batch_size=64",
    ]
    run_stage(rlvr_command(prepared, run_dir, *overrides, "logger.wandb_enabled=true", "logger.mlflow_enabled=true"))
    lines = {m["step"]: m for m in map(json.loads, (run_dir / "rlvr" / "metrics.jsonl").read_text().splitlines())}
    assert {"validation/reward/correct", "validation/reward/fmt", "validation/reward/len"} <= set(lines[0])
    for step in (1, 2):
        records = [json.loads(line) for line in (run_dir / "rlvr" / "rollouts" / f"step_{step}.jsonl").open()]
        assert len(records) == 64  # 4 prompts × 16 samples: the whole batch
        for r in records:
            expected = r["rewards"]["correct"] + 0.5 * r["rewards"]["fmt"] + 0.01 * r["rewards"]["len"]
            assert r["raw_reward"] == pytest.approx(expected, abs=1e-5)
            assert r["rewards"]["len"] == len(r["prompt"]) and r["failures"] == {}
        for name in ("correct", "fmt", "len"):
            mean = sum(r["rewards"][name] for r in records) / len(records)
            assert lines[step][f"train/reward/{name}"] == pytest.approx(mean)
        assert lines[step]["train/raw_reward"] == pytest.approx(sum(r["raw_reward"] for r in records) / 64, abs=1e-5)
        assert lines[step]["train/reward_errors/total"] == 0
    assert any(r["rewards"]["fmt"] == 1.0 for r in records)  # the regex matches some answers: not vacuous

    from tests.unit.wandb_records import read_offline_run

    [folder] = (run_dir / "rlvr" / "wandb").glob("offline-run-*")
    wandb_run = read_offline_run(folder)
    history = {h["_step"]: h for h in wandb_run["history"]}
    assert history[2]["train/reward/fmt"] == pytest.approx(lines[2]["train/reward/fmt"])
    assert history[2]["rollouts/samples/nrows"] == 4
    assert wandb_run["summary"]["rlvr.artifact"] == str(run_dir / "rlvr" / "checkpoint_megatron")
    assert wandb_run["config"]["env"]["reward_functions"][2]["name"] == "len"

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'rlvr' / 'mlflow' / 'mlflow.db'}")
    run_id = json.loads((run_dir / "rlvr" / "mlflow_run.json").read_text())["run_id"]
    assert [m.step for m in client.get_metric_history(run_id, "train/reward/len")] == [1, 2]
    assert sorted(f.path for f in client.list_artifacts(run_id, "rollouts")) == [
        "rollouts/step_1.json",
        "rollouts/step_2.json",
    ]
