"""Code verifier: run the response's program against a row's unit tests in the sandbox.

A canonical code row carries ``tests`` of one of two kinds:

* ``{"kind": "stdio", "inputs": [str], "outputs": [str], "fn_name": str | null}`` — LiveCodeBench style. Without
  ``fn_name`` each input is fed on stdin and stdout must match the output (lines compared after stripping; lines
  that differ may still match token by token as equal decimals). With ``fn_name`` each input holds one JSON value
  per line, the arguments of ``Solution().fn_name`` (or of a top-level ``fn_name``), and the return value must
  equal the JSON-decoded output.
* ``{"kind": "python", "code": str, "entry_point": str | null}`` — HumanEval style: the test code runs after the
  program in the same namespace, then ``check(<entry_point>)`` when an entry point is given; passing means
  reaching the end without an exception.

The program is the last fenced Python block of the response (```` ```python ````, ```` ```py ```` or a bare
```` ``` ````), else the whole response. Reward: 1.0 when every test passes, else 0.0; with
``partial_credit=True`` the fraction of tests passed. Timeouts, crashes and sandbox violations score 0 for their
case and name the cause in the verdict. Without partial credit the sandbox stops at the first case that crashes
or times out (a wrong output is only known outside the sandbox, so those cases still all run).
"""

from __future__ import annotations

import atexit
import json
import re
import threading
from decimal import Decimal, InvalidOperation
from typing import Any

from rlvr.errors import DataError
from rlvr.rewards.sandbox import Sandbox, SandboxRun
from rlvr.rewards.verdict import CRASH, NO_PROGRAM, SANDBOX_ERROR, SANDBOX_VIOLATION, TIMEOUT, Verdict

_FENCE = re.compile(r"```(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
# Worst first: the verdict names the most serious thing that went wrong.
_CAUSE_OF_STATUS = {"violation": SANDBOX_VIOLATION, "timeout": TIMEOUT, "crash": CRASH}

_default_sandbox: Sandbox | None = None
_default_lock = threading.Lock()


def extract_program(response: str) -> str:
    """The last fenced Python block of ``response``, else the whole response."""
    blocks = _FENCE.findall(response)
    return blocks[-1] if blocks else response


def _decimal_tokens(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(token) for token in line.split()]
    except InvalidOperation:
        return None


def stdout_matches(got: str, expected: str) -> bool:
    """LiveCodeBench's stdout comparison: stripped lines equal, or equal as whitespace-split decimals."""
    got_lines = [line.strip() for line in got.strip().splitlines()]
    expected_lines = [line.strip() for line in expected.strip().splitlines()]
    if len(got_lines) != len(expected_lines):
        return False
    for got_line, expected_line in zip(got_lines, expected_lines):
        if got_line == expected_line:
            continue
        got_numbers, expected_numbers = _decimal_tokens(got_line), _decimal_tokens(expected_line)
        if got_numbers is None or expected_numbers is None or got_numbers != expected_numbers:
            return False
    return True


def return_value_matches(got_json: str, expected_json: str) -> bool:
    """Call-based comparison: JSON-decoded return value equals the JSON-decoded expected output."""
    try:
        return json.loads(got_json) == json.loads(expected_json)
    except ValueError:
        return False


def validate_tests(tests: Any) -> dict[str, Any]:
    """Check a row's ``tests`` object; a malformed one is a DataError naming the field."""
    if not isinstance(tests, dict) or tests.get("kind") not in ("stdio", "python"):
        raise DataError(f"code row 'tests' must be an object with kind 'stdio' or 'python', got {str(tests)[:200]}")
    if tests["kind"] == "python":
        if not isinstance(tests.get("code"), str) or not tests["code"].strip():
            raise DataError("code row tests of kind 'python' need a non-empty string 'code'")
        return tests
    inputs, outputs = tests.get("inputs"), tests.get("outputs")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or not inputs:
        raise DataError("code row tests of kind 'stdio' need non-empty lists 'inputs' and 'outputs'")
    if len(inputs) != len(outputs) or not all(isinstance(x, str) for x in inputs + outputs):
        raise DataError(
            f"code row tests: 'inputs' ({len(inputs)}) and 'outputs' ({len(outputs)}) must be "
            "lists of strings of the same length"
        )
    return tests


def default_sandbox() -> Sandbox:
    """The process-wide sandbox, created on first use; its folder is removed at interpreter exit."""
    global _default_sandbox
    with _default_lock:
        if _default_sandbox is None:
            _default_sandbox = Sandbox()
            atexit.register(_default_sandbox.close)
        return _default_sandbox


def _verdict(run: SandboxRun, passed: int, total: int, partial_credit: bool) -> Verdict:
    reward = passed / total if partial_credit else float(passed == total)
    if run.status != "ok":
        cause = TIMEOUT if run.status == "timeout" else SANDBOX_ERROR
        return Verdict(0.0, cause, run.detail)
    for status, cause in _CAUSE_OF_STATUS.items():
        failed = [c for c in run.cases if c.status == status]
        if failed:
            return Verdict(reward, cause, failed[0].detail)
    return Verdict(reward)


def check_code(
    response: str, tests: dict[str, Any], *, sandbox: Sandbox | None = None, partial_credit: bool = False
) -> Verdict:
    """Score the program in ``response`` against ``tests`` (see module doc); never raises for program faults."""
    tests = validate_tests(tests)
    program = extract_program(response)
    if not program.strip():
        return Verdict(0.0, NO_PROGRAM, "the response holds no program")
    sandbox = sandbox or default_sandbox()
    stop = not partial_credit
    if tests["kind"] == "python":
        run = sandbox.run(
            "python", program, [""], test_code=tests["code"], entry_point=tests.get("entry_point"), stop_on_failure=stop
        )
        passed = int(bool(run.cases) and run.cases[0].status == "ok" and run.cases[0].output == "passed")
        return _verdict(run, passed, 1, partial_credit)
    fn_name = tests.get("fn_name")
    run = sandbox.run("call" if fn_name else "stdio", program, tests["inputs"], fn_name=fn_name, stop_on_failure=stop)
    matches = return_value_matches if fn_name else stdout_matches
    passed = sum(
        1
        for case, expected in zip(run.cases, tests["outputs"])
        if case.status == "ok" and case.output is not None and matches(case.output, expected)
    )
    return _verdict(run, passed, len(tests["outputs"]), partial_credit)


class CodeVerifier:
    """Registry entry for env ``code``: the reference of a row is its ``tests`` object."""

    name = "code"
    isolation = "sandbox"  # each check starts its own contained process; safe to call from threads

    def __init__(self, partial_credit: bool = False, sandbox: Sandbox | None = None) -> None:
        self.partial_credit = partial_credit
        self.sandbox = sandbox

    def reference(self, row: dict[str, Any]) -> dict[str, Any]:
        if "tests" not in row:
            raise DataError(f"code row has no 'tests' (keys: {sorted(row)}); rl_prep writes it for code rows")
        return validate_tests(row["tests"])

    def quick_check(self, response: str, reference: Any) -> Verdict | None:
        return None  # a program's verdict is only known by running it

    def check(self, response: str, reference: Any) -> Verdict:
        try:
            return check_code(response, reference, sandbox=self.sandbox, partial_credit=self.partial_credit)
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - an infrastructure failure is counted, not fatal to the batch
            return Verdict(0.0, SANDBOX_ERROR, f"{type(exc).__name__}: {str(exc)[:300]}")

    def __call__(self, response: str, reference: Any) -> float:
        return self.check(response, reference).reward
