"""The code verifier runs a response's program against stdio, call-based and python tests: right passes, wrong fails."""

from __future__ import annotations

import pytest

from rlvr.errors import DataError
from rlvr.rewards.code_verifier import (
    CodeVerifier,
    check_code,
    extract_program,
    return_value_matches,
    stdout_matches,
    validate_tests,
)
from rlvr.rewards.registry import get_verifier
from rlvr.rewards.sandbox import Sandbox, SandboxLimits

ADD = {"kind": "stdio", "inputs": ["1 2\n", "10 -3\n", "0 0\n"], "outputs": ["3\n", "7", "0\n"], "fn_name": None}
TWO_SUM = {
    "kind": "stdio",
    "inputs": ["[2,7,11,15]\n9", "[3,2,4]\n6"],
    "outputs": ["[0, 1]", "[1, 2]"],
    "fn_name": "twoSum",
}
SQUARE = {
    "kind": "python",
    "entry_point": "square",
    "code": "def check(candidate):\n    assert candidate(3) == 9\n    assert candidate(-2) == 4\n",
}
ASSERTS_ONLY = {"kind": "python", "code": "assert square(5) == 25\n", "entry_point": None}


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(SandboxLimits(case_timeout_s=2.0), max_concurrency=2) as shared:
        yield shared


def test_extracts_last_fenced_python_block() -> None:
    """The last ```python / ```py / bare fence wins; other languages are skipped; no fence means the whole text."""
    text = "try\n```python\nprint(1)\n```\nbetter:\n```py\nprint(2)\n```\n```cpp\nint main(){}\n```"
    assert extract_program(text) == "print(2)\n"
    assert extract_program("```\nx = 1\n```") == "x = 1\n"
    assert extract_program("print(3)") == "print(3)"


def test_output_comparisons() -> None:
    """Stdout matches after stripping lines or as equal decimals; return values match after JSON decoding."""
    assert stdout_matches("3 \n7\n\n", "3\n7")
    assert stdout_matches("1.50 2\n", "1.5 2.0")
    assert not stdout_matches("3\n7\n8", "3\n7")
    assert not stdout_matches("abc", "abd")
    assert return_value_matches("[0, 1]", "[0,1]")
    assert not return_value_matches("[1, 0]", "[0, 1]")
    assert not return_value_matches('{"__unserializable__": "{1}"}', "[1]")


@pytest.mark.parametrize(
    "response, tests, expected",
    [
        ("```python\na, b = map(int, input().split())\nprint(a + b)\n```", ADD, 1.0),
        ("import sys\na, b = map(int, sys.stdin.read().split())\nprint(a + b)\nexit()", ADD, 1.0),
        ("a, b = map(int, open(0).read().split())\nprint(a * b)", ADD, 0.0),  # wrong on 2 of 3 cases
        (
            "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n"
            "        for i, x in enumerate(nums):\n            if target - x in seen:\n"
            "                return [seen[target - x], i]\n"
            "            seen[x] = i\n",
            TWO_SUM,
            1.0,
        ),
        ("def twoSum(nums, target):\n    return (0, 1)\n", TWO_SUM, 0.0),  # top-level function; right on case 0 only
        ("def square(x):\n    return x * x\n", SQUARE, 1.0),
        ("def square(x):\n    return 2 * x\n", SQUARE, 0.0),
        ("def square(x):\n    return x ** 2\n", ASSERTS_ONLY, 1.0),
        ("def square(x):\n    return x\n", ASSERTS_ONLY, 0.0),
    ],
)
def test_right_and_wrong_solutions(sandbox, response: str, tests: dict, expected: float) -> None:
    """Correct programs score 1.0 and wrong ones 0.0 without an error cause (a wrong answer is not a failure)."""
    verdict = check_code(response, tests, sandbox=sandbox)
    assert verdict.reward == expected
    assert verdict.error is None, verdict.detail


def test_partial_credit_is_the_fraction_passed(sandbox) -> None:
    """With partial_credit the reward is passed/total: 1 of 3 addition cases right (only '0 0' as a product)."""
    verdict = check_code("a, b = map(int, input().split())\nprint(a * b)", ADD, sandbox=sandbox, partial_credit=True)
    assert verdict.reward == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "response, cause",
    [
        ("", "no_program"),
        ("raise ValueError('boom')", "crash"),
        ("import sys\nsys.exit(3)", "crash"),
        ("def square(x):\n    raise SystemExit(0)\n", "crash"),  # leaving before the tests end is no pass
    ],
)
def test_failures_are_named(sandbox, response: str, cause: str) -> None:
    """Empty programs, exceptions and early exits score 0 with their cause."""
    tests = SQUARE if "square" in response else ADD
    verdict = check_code(response, tests, sandbox=sandbox)
    assert (verdict.reward, verdict.error) == (0.0, cause)


def test_malformed_tests_are_data_errors() -> None:
    """Unknown kinds, missing code and mismatched input/output lists name the problem."""
    with pytest.raises(DataError, match="kind 'stdio' or 'python'"):
        validate_tests({"kind": "junit"})
    with pytest.raises(DataError, match="same length"):
        validate_tests({"kind": "stdio", "inputs": ["1"], "outputs": ["1", "2"]})
    with pytest.raises(DataError, match="'tests'"):
        CodeVerifier().reference({"task_name": "code"})


def test_code_rows_through_the_batch_scorer(scorer) -> None:
    """score_batch routes 'code' rows to the sandbox next to 'math' rows, in order."""
    assert get_verifier("code").isolation == "sandbox"
    rows = [
        {"task_name": "code", "tests": ADD},
        {"task_name": "math", "ground_truth": "4"},
        {"task_name": "code", "tests": ADD},
    ]
    responses = ["a, b = map(int, input().split()); print(a + b)", "\\boxed{4}", "import sys; sys.exit(2)"]
    result = scorer.score_batch(["code", "math", "code"], responses, rows)
    assert result.rewards == [1.0, 1.0, 0.0]
    assert result.per_row_error == [None, None, "crash"]
    assert result.errors["crash"] == 1
