"""score_files scores a responses file against canonical or raw math rows and reports per-line results."""

from __future__ import annotations

import json

import pytest

from rlvr.errors import DataError, UserError
from rlvr.rewards.score_cli import score_files


def _write(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_scores_canonical_and_raw_rows_to_a_file(tmp_path, scorer, capsys) -> None:
    """Each output line has index, reward and (only on failure) error; raw {problem, expected_answer} rows work."""
    data = _write(tmp_path / "rows.jsonl", [
        {"task_name": "math", "ground_truth": "3"},
        {"problem": "1/2 as a decimal?", "expected_answer": "0.5"},
        {"task_name": "math", "ground_truth": ""},
    ])
    responses = _write(tmp_path / "responses.jsonl", [
        {"response": "\\boxed{3}"}, {"response": "\\boxed{\\frac{1}{4}}"}, {"response": "\\boxed{1}"},
    ])
    out = tmp_path / "scores" / "scores.jsonl"
    assert score_files(data, responses, out, scorer=scorer) == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["index"], x["reward"]) for x in lines] == [(0, 1.0), (1, 0.0), (2, 0.0)]
    assert "error" not in lines[0] and "error" not in lines[1] and lines[2]["error"] == "exception"
    assert "mean reward 0.3333" in capsys.readouterr().err


def test_prints_to_stdout_without_output(tmp_path, scorer, capsys) -> None:
    """Without an output path the JSON lines go to stdout."""
    data = _write(tmp_path / "rows.jsonl", [{"task_name": "math", "ground_truth": "7"}])
    responses = _write(tmp_path / "responses.jsonl", [{"response": "it is 7"}])
    score_files(data, responses, scorer=scorer)
    assert json.loads(capsys.readouterr().out) == {"index": 0, "task_name": "math", "reward": 1.0}


def test_mismatched_line_counts_are_a_user_error(tmp_path, scorer) -> None:
    """Two rows and one response: the error gives both counts and the fix."""
    data = _write(tmp_path / "rows.jsonl", [{"task_name": "math", "ground_truth": "1"}] * 2)
    responses = _write(tmp_path / "responses.jsonl", [{"response": "1"}])
    with pytest.raises(UserError, match="2 rows but .* has 1 responses; give exactly one"):
        score_files(data, responses, scorer=scorer)


def test_bad_lines_name_file_and_line(tmp_path, scorer) -> None:
    """Invalid JSON, a missing response string, or an unrecognised row each point at file:line."""
    rows = _write(tmp_path / "rows.jsonl", [{"task_name": "math", "ground_truth": "1"}])
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"response": "1"}\n{oops\n')
    with pytest.raises(DataError, match="broken.jsonl:2: not valid JSON"):
        score_files(rows, broken, scorer=scorer)
    no_text = _write(tmp_path / "no_text.jsonl", [{"answer": "1"}])
    with pytest.raises(DataError, match="no_text.jsonl:1: expected"):
        score_files(rows, no_text, scorer=scorer)
    odd_rows = _write(tmp_path / "odd.jsonl", [{"question": "?"}])
    with pytest.raises(DataError, match="odd.jsonl:1: cannot tell how to score"):
        score_files(odd_rows, no_text, scorer=scorer)


def test_code_rows_are_scored_in_the_sandbox(tmp_path, scorer, capsys) -> None:
    """Canonical code rows score through the sandbox; a crash carries its cause."""
    tests = {"kind": "stdio", "inputs": ["5\n"], "outputs": ["25\n"], "fn_name": None}
    data = _write(tmp_path / "rows.jsonl", [{"task_name": "code", "tests": tests}] * 2)
    responses = _write(tmp_path / "responses.jsonl", [
        {"response": "```python\nn = int(input())\nprint(n * n)\n```"}, {"response": "print(1/0)"},
    ])
    score_files(data, responses, scorer=scorer)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["reward"] for x in lines] == [1.0, 0.0] and lines[1]["error"] == "crash"
    assert "ZeroDivisionError" in lines[1]["detail"]
