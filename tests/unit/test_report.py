"""The run report: the no-learning-signal warning and the per-run figures it is computed from."""

from __future__ import annotations

import json
from pathlib import Path

from rlvr.report import write_report


def _run_folder(tmp_path: Path, fracs: list[float], patience: int = 10) -> Path:
    run = tmp_path / "run"
    (run / "rlvr").mkdir(parents=True)
    lines = [{"step": 0, "validation/accuracy": 0.0}]
    lines += [
        {"step": i, "train/reward": 0.0, "train/frac_groups_zero_std": f, "timing/train/total_step_time": 0.1}
        for i, f in enumerate(fracs, start=1)
    ]
    lines += [{"step": len(fracs), "validation/accuracy": 0.0}]
    (run / "rlvr" / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (run / "rlvr" / "summary.json").write_text(json.dumps({"seconds": 1.0, "zero_signal": {"patience": patience}}))
    return run


def test_a_run_without_any_signal_is_flagged_in_the_report(tmp_path):
    """Every step dead: the report says no learning signal at any step, next to the +0.000 change."""
    report = write_report(_run_folder(tmp_path, [1.0] * 4), tmp_path / "report").read_text()
    assert "(change +0.000)" in report
    assert "**WARNING (no_learning_signal): no learning signal at any step**" in report
    assert "mean 1.000; 4 of 4 steps had none with any spread (longest streak 4)" in report


def test_a_streak_longer_than_the_patience_is_flagged(tmp_path):
    report = write_report(
        _run_folder(tmp_path, [0.5, 1.0, 1.0, 1.0, 0.25], patience=3), tmp_path / "report"
    ).read_text()
    assert "no learning signal for 3 consecutive steps" in report


def test_a_healthy_run_gets_the_figure_but_no_warning(tmp_path):
    report = write_report(_run_folder(tmp_path, [0.5, 1.0, 0.0, 0.25], patience=3), tmp_path / "report").read_text()
    assert "WARNING" not in report
    assert "mean 0.438; 1 of 4 steps had none with any spread (longest streak 1)" in report
