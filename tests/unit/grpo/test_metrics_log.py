"""metrics.jsonl of a GRPO run: one line per step, cut back on resume (rlvr.grpo.metrics_log)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from rlvr.errors import CheckpointError
from rlvr.grpo.metrics_log import MetricsLog, metrics_line, read_metrics


def new_log(path, **kwargs) -> MetricsLog:
    kwargs.setdefault("progress_bar", False)
    return MetricsLog(path, total_steps=6, **kwargs)


def write_steps(log: MetricsLog, steps) -> None:
    for step in steps:
        log.log(step, {"train/reward": step / 10})


def steps_of(path) -> list[int]:
    return [m["step"] for m in read_metrics(path)]


def test_lines_are_plain_json_with_step_first(tmp_path, capsys):
    """Tensors become numbers, non-finite values null, keys sorted after ``step``; the progress line prints."""
    log = new_log(tmp_path / "m.jsonl")
    log.restart_from(None)
    log.log(
        3,
        {
            "train/reward": torch.tensor(0.5),
            "train/loss": float("nan"),
            "validation/accuracy": 0.25,
            "train/grad_norm": math.inf,
        },
    )
    log.close()
    [line] = (tmp_path / "m.jsonl").read_text().splitlines()
    assert line == (
        '{"step": 3, "train/grad_norm": null, "train/loss": null, "train/reward": 0.5, "validation/accuracy": 0.25}'
    )
    assert "step 3/6 | reward 0.500 | val acc 0.250" in capsys.readouterr().out


def test_fresh_start_empties_the_file(tmp_path):
    """restart_from(None) (no checkpoint to resume): lines of an earlier attempt are dropped."""
    path = tmp_path / "m.jsonl"
    log = new_log(path)
    log.restart_from(None)
    write_steps(log, range(4))
    new_log(path).restart_from(None)
    assert path.read_text() == ""


def test_restart_cuts_lines_after_the_resume_step(tmp_path):
    """Steps 0..4 logged, resume from step 2: lines 0, 1, 2 are kept byte for byte, 3 and 4 are gone."""
    path = tmp_path / "m.jsonl"
    log = new_log(path)
    log.restart_from(None)
    write_steps(log, range(5))
    before = path.read_text().splitlines()
    new_log(path).restart_from(2)
    assert path.read_text().splitlines() == before[:3]


def test_interrupted_run_logs_every_step_once(tmp_path):
    """Run 0..3, die, resume from the step-2 checkpoint, run 3..6: steps 0..6 each exactly once, new step 3."""
    path = tmp_path / "m.jsonl"
    first = new_log(path)
    first.restart_from(None)
    write_steps(first, range(4))
    second = new_log(path)
    second.restart_from(2)
    for step in range(3, 7):
        second.log(step, {"train/reward": 1.0 + step})
    second.close()
    metrics = read_metrics(path)
    assert [m["step"] for m in metrics] == [0, 1, 2, 3, 4, 5, 6]
    assert metrics[3]["train/reward"] == 4.0 and metrics[2]["train/reward"] == pytest.approx(0.2)


def test_torn_last_line_is_dropped_on_resume(tmp_path):
    """A kill -9 inside ``log`` may leave half a line at the end: resume drops it instead of failing."""
    path = tmp_path / "m.jsonl"
    log = new_log(path)
    log.restart_from(None)
    write_steps(log, range(3))
    with open(path, "a") as fh:
        fh.write('{"step": 3, "train/rew')
    new_log(path).restart_from(2)
    assert steps_of(path) == [0, 1, 2]


def test_corrupt_line_in_the_middle_is_an_error(tmp_path):
    """Only the last line can be torn by a kill; garbage earlier names the file and line."""
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 0}\nnot json\n{"step": 1}\n')
    with pytest.raises(CheckpointError, match=r"m\.jsonl:2: not a JSON line"):
        new_log(path).restart_from(1)


def test_missing_checkpoint_line_is_restored_from_the_checkpoint(tmp_path):
    """Killed after saving step_2 but before logging it: the checkpoint's copy of line 2 is put back, once."""
    path = tmp_path / "m.jsonl"
    log = new_log(path)
    log.restart_from(None)
    write_steps(log, range(2))
    saved = metrics_line(2, {"train/reward": 0.75})
    new_log(path).restart_from(2, saved)
    assert read_metrics(path)[-1] == {"step": 2, "train/reward": 0.75}
    new_log(path).restart_from(2, {"step": 2, "train/reward": -1.0})  # line 2 present: not duplicated
    assert steps_of(path) == [0, 1, 2] and read_metrics(path)[-1]["train/reward"] == 0.75


def test_tensorboard_events_are_cut_like_the_jsonl(tmp_path):
    """With TensorBoard on, resuming from step 2 purges events after step 2 (purge_step) and re-logs 3."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path, tb = tmp_path / "m.jsonl", tmp_path / "tb"
    log = new_log(path, tensorboard_dir=tb)
    log.restart_from(None)
    write_steps(log, range(5))
    log.close()
    log = new_log(path, tensorboard_dir=tb)
    log.restart_from(2)
    log.log(3, {"train/reward": 9.0})
    log.close()
    acc = EventAccumulator(str(tb))
    acc.Reload()
    events = {e.step: e.value for e in acc.Scalars("train/reward")}
    assert sorted(events) == [0, 1, 2, 3]
    assert events[3] == 9.0 and events[1] == pytest.approx(0.1)


def test_read_metrics_of_missing_file_is_empty(tmp_path):
    """No metrics file yet reads as no steps."""
    assert read_metrics(tmp_path / "none.jsonl") == []
    assert json.loads(json.dumps(metrics_line(0, {}))) == {"step": 0}
