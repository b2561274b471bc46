"""The reward pre-flight proves the verifier tells each row's answer from a wrong one, or names the rows."""

from __future__ import annotations

import pytest

from rlvr.errors import UserError
from rlvr.rewards.preflight import WRONG_TEXT, corrupt_answer, preflight

CORRUPTIONS = [  # hand-computed
    ("42", "43"),
    ("-7", "-6"),
    ("1,000,000", "1000001"),
    ("0.5", "1.5"),
    ("0.0000001", "1.0000001"),  # +1, not a digit change that rounds away at 6 decimals
    ("1500000.25", "3000000.50"),  # |v| >= 1e6: doubled, since +1 vanishes in ~15 significant digits
    ("\\frac{1}{2}", "\\frac{3}{2}"),
    ("-\\frac{3}{4}", "\\frac{1}{4}"),
    ("-5/2", "-\\frac{3}{2}"),
    ("$x^2+1$", "\\left(x^2+1\\right)+1"),
    ("\\cos(\\pi)", "\\left(\\cos(\\pi)\\right)+1"),  # e+1 even where e = -1
    ("1.5\\times10^{20}", "2\\cdot\\left(1.5\\times10^{20}\\right)+1"),
    ("(1,2)", WRONG_TEXT),
    ("\\infty", WRONG_TEXT),
    ("x = 3", WRONG_TEXT),
    ("\\text{Monday}", WRONG_TEXT),
]


@pytest.mark.parametrize("truth, expected", CORRUPTIONS)
def test_corruption_table(truth: str, expected: str) -> None:
    """Integers and fractions shift by exactly 1, big decimals double, expressions add 1, the rest become text."""
    assert corrupt_answer(truth) == expected


GOOD_TRUTHS = [
    "42",
    "-1",
    "0",
    "123456789012345678901234567890",
    "3.14159265",
    "12.50",
    "\\frac{\\sqrt{5}-1}{2}",
    "\\dfrac{7}{3}",
    "2\\sqrt{3}",
    "\\frac{\\pi}{2}",
    "10^{-9}",
    "1.5\\times10^{20}",
    "50\\%",
    "90^\\circ",
    "\\cos(\\pi)",
    "2 + 3i",
    "(1,2)",
    "[0, 1)",
    "\\{1, 2, 3\\}",
    "x = 3",
    "x \\le 5",
    "\\text{Monday}",
    "-\\infty",
]


def test_verifier_validates_on_varied_answers(scorer) -> None:
    """With real math-verify every ground truth above scores 1.0 and its corruption 0.0: no problems reported."""
    rows = [{"task_name": "math", "ground_truth": t} for t in GOOD_TRUTHS]
    report = preflight(rows, scorer=scorer)
    assert report.ok and report.rows == len(GOOD_TRUTHS) and report.scored == 2 * len(GOOD_TRUTHS)


def test_unusable_rows_fail_with_the_manifest_error(scorer) -> None:
    """An unparsable ground truth fails the pre-flight with code reward_function_not_validated, naming the row."""
    rows = [{"task_name": "math", "ground_truth": "4"}, {"task_name": "math", "ground_truth": ""}]
    with pytest.raises(UserError) as info:
        preflight(rows, scorer=scorer, source="train.jsonl")
    assert info.value.code == "reward_function_not_validated"
    message = str(info.value)
    assert "1 of 2 rows in train.jsonl" in message
    assert "row 1 (math): reference ''; scored ground_truth '\\\\boxed{}' -> reward 0, expected 1 [exception" in message
    assert "row 0" not in message


def test_code_rows_need_tests_an_empty_program_fails(scorer) -> None:
    """A code row passes the pre-flight when a do-nothing program fails its tests, and is named when it passes."""
    real = {"task_name": "code", "tests": {"kind": "stdio", "inputs": ["2\n"], "outputs": ["4\n"], "fn_name": None}}
    vacuous = {"task_name": "code", "tests": {"kind": "python", "code": "assert True\n", "entry_point": None}}
    silent = {"task_name": "code", "tests": {"kind": "stdio", "inputs": ["x"], "outputs": [""], "fn_name": None}}
    assert preflight([real], scorer=scorer).ok
    with pytest.raises(UserError) as info:
        preflight([real, vacuous, silent], scorer=scorer)
    message = str(info.value)
    assert "2 of 3 rows" in message and "row 1 (code)" in message and "row 2 (code)" in message
    assert "scored empty_program" in message and "row 0" not in message
