"""Row formats: a fast check-and-convert per format, equal to its JSON Schema, plus a slow diagnosis for bad rows.

A format turns one parsed JSONL row into the task-specific part of a canonical row (``problem`` plus the verifier
field, see :mod:`rlvr.data.rows`), or returns None. ``convert`` is the hot path: plain ``type(...) is`` tests,
no jsonschema. It accepts a row exactly when the row is valid under the format's schema *and* passes the format's
cross-field rules (which JSON Schema cannot express, e.g. as many stdio outputs as inputs); ``tests/unit/data``
proves the two agree. ``diagnose`` runs only for rejected rows and says why: first a missing verifier field
(error code ``missing_verifier_fields``), then the most relevant schema error, then a cross-field rule.

Which format a dataset holds comes from its config (``env_name``, ``processor``, ``dataset_name``, keys), decided once
per dataset by :func:`choose_format`, never per row.
"""

from __future__ import annotations

import math
from decimal import Decimal

from rlvr.data.gym import GymRows
from rlvr.data.row_format import RowFormat
from rlvr.data.row_schemas import RowProblem


def _blank(value: object) -> bool:
    """A verifier value that carries nothing: absent, null or empty (an empty answer cannot be checked)."""
    return value is None or value == "" or value == []


def numeric_answer_text(value: int | float) -> str | None:
    """The canonical string of a numeric answer (NeMo-RL data often stores ``"expected_answer": 5``).

    Integers are written as they are (``5`` -> ``"5"``). Floats are written in plain decimal notation with the
    shortest digits that read back as the same float, and without a trailing ``.0``: ``5.0`` -> ``"5"``, ``2.50``
    -> ``"2.5"``, ``1e3`` -> ``"1000"``, ``1e-7`` -> ``"0.0000001"``, ``-0.0`` -> ``"0"``; so the verifier sees
    the number a person would write, never ``1e+03``. NaN and infinities are not answers: None.
    """
    if type(value) is int:
        return str(value)
    if not math.isfinite(value):
        return None
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


class MathColumns(RowFormat):
    """Math rows as two string columns: the problem and the expected answer (schema ``math_legacy``)."""

    schema_name = "math_legacy"

    def __init__(self, problem_key: str = "problem", answer_key: str = "expected_answer"):
        self.problem_key, self.answer_key = problem_key, answer_key
        self.renames = tuple(
            (old, new) for old, new in (("problem", problem_key), ("expected_answer", answer_key)) if old != new
        )
        self.description = f"columns(problem={problem_key}, answer={answer_key})"

    def convert(self, row: object) -> dict | None:
        if type(row) is dict:
            problem, answer = row.get(self.problem_key), row.get(self.answer_key)
            if type(problem) is str and problem:
                if type(answer) is str:
                    if answer:
                        return {"problem": problem, "ground_truth": answer}
                elif type(answer) is int or type(answer) is float:
                    text = numeric_answer_text(answer)
                    if text is not None:
                        return {"problem": problem, "ground_truth": text}
        return None

    def missing_verifier_fields(self, row: object) -> list[str]:
        return [self.answer_key] if isinstance(row, dict) and _blank(row.get(self.answer_key)) else []

    def cross_field_problem(self, row: object) -> RowProblem | None:
        answer = row.get(self.answer_key) if isinstance(row, dict) else None
        if type(answer) is float and not math.isfinite(answer):
            return RowProblem(self.answer_key, f"{answer} is not a checkable answer; write a finite number or a string")
        return None

    def verifier_hint(self) -> str:
        return f"no reference answer; every math row needs a non-empty string or a number {self.answer_key!r}"


class MathMessages(RowFormat):
    """Math rows as ``messages = [system?, user(problem), assistant(ground truth)]`` (schema ``math_messages``).

    A leading system turn is the row's own system prompt: it is kept as ``system_prompt`` (used when the prompt is
    templated, in place of ``system_prompt_file``, then dropped from the canonical row).
    """

    schema_name = "math_messages"
    description = "messages([system?, user, assistant])"

    def convert(self, row: object) -> dict | None:
        if type(row) is dict:
            messages = row.get("messages")
            if type(messages) is list and 2 <= len(messages) <= 3:
                system = None
                if len(messages) == 3:
                    head = messages[0]
                    if type(head) is not dict or head.get("role") != "system":
                        return None
                    system = head.get("content")
                    if type(system) is not str or not system:
                        return None
                user, assistant = messages[-2:]
                if (
                    type(user) is dict
                    and type(assistant) is dict
                    and user.get("role") == "user"
                    and assistant.get("role") == "assistant"
                ):
                    problem, answer = user.get("content"), assistant.get("content")
                    if type(problem) is str and type(answer) is str and problem and answer:
                        item = {"problem": problem, "ground_truth": answer}
                        if system is not None:
                            item["system_prompt"] = system
                        return item
        return None

    def missing_verifier_fields(self, row: object) -> list[str]:
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list) or not messages:
            return []
        head = messages[0]
        answer_at = 2 if isinstance(head, dict) and head.get("role") == "system" else 1
        if len(messages) == answer_at or (
            len(messages) > answer_at
            and isinstance(messages[answer_at], dict)
            and _blank(messages[answer_at].get("content"))
        ):
            return [f"messages[{answer_at}].content"]
        return []

    def verifier_hint(self) -> str:
        return "no ground truth; add an assistant turn with the reference answer after the user turn"


_STDIO_KEYS = frozenset({"kind", "inputs", "outputs", "fn_name"})
_PYTHON_KEYS = frozenset({"kind", "code", "entry_point"})


class CodeTests(RowFormat):
    """Code rows: a problem and unit tests, stdio cases or Python test code (schema ``code``)."""

    schema_name = "code"

    def __init__(self, problem_key: str = "problem", tests_key: str = "tests"):
        self.problem_key, self.tests_key = problem_key, tests_key
        self.renames = tuple((old, new) for old, new in (("problem", problem_key), ("tests", tests_key)) if old != new)
        self.description = f"code(problem={problem_key}, tests={tests_key})"

    def convert(self, row: object) -> dict | None:
        if type(row) is not dict:
            return None
        problem, tests = row.get(self.problem_key), row.get(self.tests_key)
        if type(problem) is not str or not problem or type(tests) is not dict:
            return None
        kind = tests.get("kind")
        if kind == "stdio":
            inputs, outputs, fn_name = tests.get("inputs"), tests.get("outputs"), tests.get("fn_name")
            if (
                type(inputs) is list
                and type(outputs) is list
                and inputs
                and len(inputs) == len(outputs)
                and all(type(item) is str for item in inputs)
                and all(type(item) is str for item in outputs)
                and (fn_name is None or type(fn_name) is str)
                and tests.keys() <= _STDIO_KEYS
            ):
                return {
                    "problem": problem,
                    "tests": {"kind": "stdio", "inputs": inputs, "outputs": outputs, "fn_name": fn_name},
                }
        elif kind == "python":
            code, entry_point = tests.get("code"), tests.get("entry_point")
            if (
                type(code) is str
                and code
                and (entry_point is None or type(entry_point) is str)
                and tests.keys() <= _PYTHON_KEYS
            ):
                return {"problem": problem, "tests": {"kind": "python", "code": code, "entry_point": entry_point}}
        return None

    def missing_verifier_fields(self, row: object) -> list[str]:
        if not isinstance(row, dict):
            return []
        tests = row.get(self.tests_key)
        if tests is None:
            return [self.tests_key]
        if isinstance(tests, dict):
            if tests.get("kind") == "stdio" and _blank(tests.get("inputs")):
                return [f"{self.tests_key}.inputs"]
            if tests.get("kind") == "python" and _blank(tests.get("code")):
                return [f"{self.tests_key}.code"]
        return []

    def cross_field_problem(self, row: object) -> RowProblem | None:
        tests = row.get(self.tests_key) if isinstance(row, dict) else None
        if isinstance(tests, dict) and tests.get("kind") == "stdio":
            inputs, outputs = tests.get("inputs"), tests.get("outputs")
            if isinstance(inputs, list) and isinstance(outputs, list) and len(inputs) != len(outputs):
                return RowProblem(
                    f"{self.tests_key}.outputs",
                    f"has {len(outputs)} item(s) but {self.tests_key}.inputs has {len(inputs)}; "
                    "give one expected output per input",
                )
        return None

    def verifier_hint(self) -> str:
        return (
            f"no unit tests; every code row needs {self.tests_key!r} with stdio cases "
            "(non-empty inputs/outputs) or python test code"
        )


def choose_format(
    env_name: str,
    *,
    processor: str | None,
    dataset_name: str | None,
    input_key: str | None,
    output_key: str | None,
    first_row: object,
    default_agent_ref: dict | None = None,
) -> RowFormat:
    """The format of one dataset, from its config; ``first_row`` only tells NeMo-RL's two math layouts apart.

    Math: a file whose rows carry ``messages`` is read as messages (as NeMo-RL's ``ResponseDataset`` does when the
    column exists), unless ``processor`` is the legacy ``math_data_processor``; otherwise as two columns named by
    ``input_key`` / ``output_key``, defaulting to ``input`` / ``output`` for ``dataset_name: ResponseDataset`` (as
    NeMo-RL) and to the legacy ``problem`` / ``expected_answer`` otherwise. The choice is made once per dataset:
    every row must then follow it.
    """
    if env_name == "nemo_gym":
        return GymRows(default_agent_ref)
    if env_name == "code":
        return CodeTests(input_key or "problem", output_key or "tests")
    if processor != "math_data_processor" and isinstance(first_row, dict) and "messages" in first_row:
        return MathMessages()
    defaults = ("input", "output") if dataset_name == "ResponseDataset" else ("problem", "expected_answer")
    return MathColumns(input_key or defaults[0], output_key or defaults[1])
