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
    data = _write(
        tmp_path / "rows.jsonl",
        [
            {"task_name": "math", "ground_truth": "3"},
            {"problem": "1/2 as a decimal?", "expected_answer": "0.5"},
            {"task_name": "math", "ground_truth": ""},
        ],
    )
    responses = _write(
        tmp_path / "responses.jsonl",
        [
            {"response": "\\boxed{3}"},
            {"response": "\\boxed{\\frac{1}{4}}"},
            {"response": "\\boxed{1}"},
        ],
    )
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
    with pytest.raises(DataError, match="odd.jsonl:1: expected_answer: missing_verifier_fields"):
        score_files(odd_rows, no_text, scorer=scorer)


def test_code_rows_are_scored_in_the_sandbox(tmp_path, scorer, capsys) -> None:
    """Canonical code rows score through the sandbox; a crash carries its cause."""
    tests = {"kind": "stdio", "inputs": ["5\n"], "outputs": ["25\n"], "fn_name": None}
    data = _write(tmp_path / "rows.jsonl", [{"task_name": "code", "tests": tests}] * 2)
    responses = _write(
        tmp_path / "responses.jsonl",
        [
            {"response": "```python\nn = int(input())\nprint(n * n)\n```"},
            {"response": "print(1/0)"},
        ],
    )
    score_files(data, responses, scorer=scorer)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["reward"] for x in lines] == [1.0, 0.0] and lines[1]["error"] == "crash"
    assert "ZeroDivisionError" in lines[1]["detail"]


HUMANEVAL_ROW = {
    "task_id": "HumanEval/53",
    "problem": 'def add(x: int, y: int):\n    """Add two numbers x and y"""\n',
    "tests": {
        "kind": "python",
        "entry_point": "add",
        "code": "def check(candidate):\n    assert candidate(0, 1) == 1\n    assert candidate(5, 7) == 12\n",
    },
}


def test_raw_code_rows_stdio_and_humaneval_are_scored(tmp_path, scorer, capsys) -> None:
    """Raw {problem, tests} rows, the kind rl_prep reads with env_name code, score without rl_prep."""
    stdio = {"problem": "Print the square of n.", "tests": {"kind": "stdio", "inputs": ["5\n"], "outputs": ["25\n"]}}
    data = _write(tmp_path / "rows.jsonl", [stdio, HUMANEVAL_ROW, HUMANEVAL_ROW])
    responses = _write(
        tmp_path / "responses.jsonl",
        [
            {"response": "```python\nn = int(input())\nprint(n * n)\n```"},
            {"response": "```python\ndef add(x, y):\n    return x + y\n```"},
            {"response": "```python\ndef add(x, y):\n    return x - y\n```"},
        ],
    )
    score_files(data, responses, scorer=scorer)
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["task_name"], x["reward"]) for x in lines] == [("code", 1.0), ("code", 1.0), ("code", 0.0)]


def test_messages_rows_with_system_turn_and_numeric_answers(tmp_path, scorer, capsys) -> None:
    """[system, user, assistant] rows and numeric expected_answer values are read as rl_prep reads them."""
    messages = _write(
        tmp_path / "messages.jsonl",
        [
            {
                "messages": [
                    {"role": "system", "content": "Answer with a number."},
                    {"role": "user", "content": "2*3?"},
                    {"role": "assistant", "content": "6"},
                ]
            },
            {"messages": [{"role": "user", "content": "2*4?"}, {"role": "assistant", "content": "8"}]},
        ],
    )
    responses = _write(tmp_path / "r1.jsonl", [{"response": "\\boxed{6}"}, {"response": "\\boxed{9}"}])
    score_files(messages, responses, scorer=scorer)
    assert [json.loads(x)["reward"] for x in capsys.readouterr().out.splitlines()] == [1.0, 0.0]
    numeric = _write(
        tmp_path / "numeric.jsonl",
        [
            {"problem": "g in a kg?", "expected_answer": 1e3},
            {"problem": "1/8?", "expected_answer": 0.125},
            {"task_name": "math", "ground_truth": 5},
        ],
    )
    responses = _write(
        tmp_path / "r2.jsonl",
        [{"response": "\\boxed{1000}"}, {"response": "\\boxed{0.125}"}, {"response": "\\boxed{5}"}],
    )
    score_files(numeric, responses, scorer=scorer)
    assert [json.loads(x)["reward"] for x in capsys.readouterr().out.splitlines()] == [1.0, 1.0, 1.0]


def test_bad_raw_rows_get_rl_preps_errors(tmp_path, scorer) -> None:
    """One shared code path: the same file gives the same file:line: field: problem lines as rl_prep."""
    from rlvr.data.prep import prepare_rl_data

    rows = _write(
        tmp_path / "rows.jsonl",
        [{"problem": "ok", "expected_answer": "1"}, {"problem": 5}, {"problem": "p", "expected_answer": float("nan")}],
    )
    responses = _write(tmp_path / "responses.jsonl", [{"response": "1"}] * 3)
    with pytest.raises(DataError) as scored:
        score_files(rows, responses, scorer=scorer)
    with pytest.raises(DataError) as prepared:
        prepare_rl_data({"train": {"data_path": rows}}, out_dir=tmp_path / "out", tokenizer_dir=None, seed=0)

    def problem_lines(message: str) -> list[str]:
        return [line.strip() for line in message.splitlines() if line.strip().startswith(rows)]

    assert problem_lines(str(scored.value)) == problem_lines(str(prepared.value))
    assert f"{rows}:2: expected_answer: missing_verifier_fields" in str(scored.value)
    assert f"{rows}:3: expected_answer: nan is not a checkable answer" in str(scored.value)
    assert "2 bad line(s) in the rows to score" in str(scored.value)


def test_gym_rows_are_refused_with_the_reason(tmp_path, scorer) -> None:
    rows = _write(tmp_path / "gym.jsonl", [{"responses_create_params": {"input": "2+2?"}, "expected_answer": "4"}])
    responses = _write(tmp_path / "responses.jsonl", [{"response": "4"}])
    with pytest.raises(DataError, match="gym.jsonl:1: responses_create_params: NeMo-Gym rows are scored by"):
        score_files(rows, responses, scorer=scorer)


def test_non_utf8_responses_are_one_error_naming_the_line(tmp_path):
    from rlvr.errors import DataError
    from rlvr.rewards.score_cli import load_responses

    path = tmp_path / "responses.jsonl"
    path.write_bytes(b'{"response": "4"}\n{"response": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"responses.jsonl:2: not UTF-8 text \(byte 0xe9"):
        load_responses(path)


def test_an_unwritable_output_is_refused_before_any_scoring(tmp_path, monkeypatch):
    from rlvr.errors import UserError
    from rlvr.rewards import score_cli

    data = tmp_path / "rows.jsonl"
    data.write_text('{"problem": "1+1", "expected_answer": "2"}\n')
    responses = tmp_path / "responses.jsonl"
    responses.write_text('{"response": "2"}\n')
    blocker = tmp_path / "file"
    blocker.write_text("in the way")  # a file where the output's folder should be: fails for root too
    monkeypatch.setattr(score_cli, "load_rows", lambda *a, **k: pytest.fail("scored before checking --output"))
    with pytest.raises(UserError, match=r"--output .*cannot be written"):
        score_cli.score_files(data, responses, blocker / "scores.jsonl")
    with pytest.raises(UserError, match=r"is a folder"):
        score_cli.score_files(data, responses, tmp_path)
