"""The run report: the no-learning-signal warning and the per-run figures it is computed from."""

from __future__ import annotations

import json
from pathlib import Path

from rlvr.report import ReportInputs, write_report


def _run_folder(tmp_path: Path, fracs: list[float], patience: int = 10) -> ReportInputs:
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
    return ReportInputs(
        metrics=run / "rlvr" / "metrics.jsonl",
        summary=run / "rlvr" / "summary.json",
        data_card=run / "rl_prep" / "data_card.json",
        rollouts=run / "rlvr" / "rollouts",
    )


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


def test_the_report_pages_show_validation_rollouts_and_the_card(tmp_path):
    """validation.html lists each validation step; rollouts.html the last dump's first rows, escaped; the card."""
    inputs = _run_folder(tmp_path, [0.5, 0.0])
    inputs.rollouts.mkdir()
    row = {"prompt": "<b>1+1</b>", "response": "2", "reward": 1.0, "advantage": 0.5}
    (inputs.rollouts / "step_1.jsonl").write_text(json.dumps({**row, "response": "old"}) + "\n")
    (inputs.rollouts / "step_2.jsonl").write_text("".join(json.dumps(row) + "\n" for _ in range(20)))
    inputs.data_card.parent.mkdir()
    inputs.data_card.write_text(json.dumps({"train": {"rows_out": 64}, "seed": None}))
    write_report(inputs, tmp_path / "report")
    validation = (tmp_path / "report" / "validation.html").read_text()
    assert validation.count("<tr>") == 3 and "validation/accuracy" in validation  # header + steps 0 and 2
    rollouts = (tmp_path / "report" / "rollouts.html").read_text()
    assert "the first 8 rows of step 2" in rollouts and rollouts.count("<tr>") == 9
    assert "&lt;b&gt;1+1&lt;/b&gt;" in rollouts and "old" not in rollouts
    assert "rows_out" in (tmp_path / "report" / "data_card.html").read_text()


def test_without_rollout_dumps_the_page_says_they_were_off(tmp_path):
    write_report(_run_folder(tmp_path, [0.5]), tmp_path / "report")
    assert "rollout dumps were off" in (tmp_path / "report" / "rollouts.html").read_text()
