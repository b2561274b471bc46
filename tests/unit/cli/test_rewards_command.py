"""`nemotron rewards score`: one JSON object per response with index and reward; mismatches are user errors."""

from __future__ import annotations

import json

from rlvr.cli.main import main


def test_scores_math_rows_in_order(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        "".join(json.dumps({"problem": f"{a}+{a}", "expected_answer": str(2 * a)}) + "\n" for a in (1, 2, 3))
    )
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps({"response": r}) + "\n" for r in ("\\boxed{2}", "5", "6")))
    out = tmp_path / "scores.jsonl"
    assert main(["rewards", "score", "--data", str(rows), "--responses", str(responses), "--output", str(out)]) == 0
    scores = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(s["index"], s["reward"]) for s in scores] == [(0, 1.0), (1, 0.0), (2, 1.0)]


def test_count_mismatch_is_a_clear_error(tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"problem": "1+1", "expected_answer": "2"}) + "\n")
    responses = tmp_path / "responses.jsonl"
    responses.write_text("")
    assert main(["rewards", "score", "--data", str(rows), "--responses", str(responses)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err


def test_reasoning_gym_rows_with_input_and_output_keys(tmp_path, capsys):
    """{"question", "answer": <number>} rows (reasoning-gym) read through --input-key / --output-key."""
    rows = tmp_path / "rg.jsonl"
    rows.write_text(
        "".join(json.dumps({"question": f"What is {a} * 3?", "answer": 3 * a, "metadata": {}}) + "\n" for a in (4, 5))
    )
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps({"response": r}) + "\n" for r in ("\\boxed{12}", "\\boxed{14}")))
    args = ["rewards", "score", "--data", str(rows), "--responses", str(responses)]
    assert main([*args, "--input-key", "question", "--output-key", "answer"]) == 0
    assert [json.loads(line)["reward"] for line in capsys.readouterr().out.splitlines()] == [1.0, 0.0]
    # Without the keys the rows are read as problem / expected_answer: rl_prep's error, exit 1, no traceback.
    out = tmp_path / "scores.jsonl"
    assert main([*args, "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{rows}:1: expected_answer: missing_verifier_fields" in err and "Traceback" not in err
    assert "--env-name / --input-key / --output-key" in err and not out.exists()
