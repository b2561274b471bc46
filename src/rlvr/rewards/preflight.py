"""Reward pre-flight: prove, before any training, that the verifier can tell right from wrong on *this* data.

For every math row two responses are scored with the real verifier:

* the row's own ground truth, written as a model is prompted to answer (``\\boxed{<ground truth>}``; a bare LaTeX
  answer such as ``x^2+1`` is not extracted by math-verify without delimiters) — it must get 1.0;
* a corrupted answer from :func:`corrupt_answer`, wrong by construction — it must get 0.0.

A ground truth math-verify cannot parse (reward 0 for everything: no learning signal) or a verifier that accepts
anything fails the pre-flight with :class:`rlvr.errors.UserError` (code ``reward_function_not_validated``) listing
the offending rows. Code rows carry tests but no reference solution, so for them the pre-flight only checks that an
empty program (``pass``, run against the tests in the sandbox) scores 0.0, i.e. the tests are not vacuous; it
cannot prove that a correct program would pass.

With ``env.reward_functions``, the verifier's probes run only when the verifier is one of them, and every other
function (custom or built-in) is called on the same probe responses of every row in the verifier workers: each call
must return one finite number, without raising or timing out (what it returns is the function's business: a format
reward may score a right and a wrong answer alike).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from rlvr.errors import DataError, UserError
from rlvr.rewards.custom import INTERNAL_NAME, VERIFIER, RewardFunction, tag_rows
from rlvr.rewards.registry import get_verifier
from rlvr.rewards.scorer import RewardScorer, default_scorer

ERROR_CODE = "reward_function_not_validated"
WRONG_TEXT = "\\text{rlvr preflight wrong answer}"
EMPTY_PROGRAM = "```python\npass\n```"

_INTEGER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)")
_DECIMAL = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+)")
_FRACTION = re.compile(r"([+-]?)(?:\\[dt]?frac\{\s*(\d+)\s*\}\{\s*(\d+)\s*\}|(\d+)\s*/\s*(\d+))")
# Answers that are not a single scalar expression: sets, tuples, intervals, relations, text, infinities, ±.
_NOT_SCALAR = re.compile(
    r"[,;=<>\[\]]|\\[{}]|\\(?:le|ge|leq|geq|neq|ne|lt|gt|cup|cap|in|text\w*|math\w*|mbox|operatorname|infty|pm|mp|"
    r"begin)\b|\binfty\b|\boo\b"
)


def corrupt_answer(ground_truth: str) -> str:
    """A LaTeX answer that is wrong for ``ground_truth`` by construction (never equal at math-verify's precision).

    * integer ``n`` → ``n + 1`` (exact integer comparison);
    * decimal ``v`` → ``v + 1`` when ``|v| < 10^6``, else ``2v`` (math-verify rounds floats to 6 decimals and keeps
      ~15 significant digits, so ``+1`` vanishes for huge floats while doubling never does; ``2v = v`` only at 0,
      which takes the ``+1`` branch);
    * fraction ``±a/b`` → ``(±a + b)/b``, i.e. value + 1, exactly;
    * any other scalar expression ``e`` → ``e + 1`` (never equal in exact arithmetic); when ``e`` holds a decimal
      point (floats, where ``+1`` vanishes at large magnitudes) → ``2e + 1``, equal to ``e`` only where ``e = -1``;
    * anything else (sets, tuples, intervals, relations, text, infinity) → a fixed text answer that is none of those.
    """
    text = ground_truth.strip().strip("$").strip()
    if _INTEGER.fullmatch(text):
        return str(int(text.replace(",", "")) + 1)
    if _DECIMAL.fullmatch(text):
        try:
            value = Decimal(text)
        except InvalidOperation:
            return WRONG_TEXT
        return format(value + 1 if abs(value) < 10**6 else 2 * value, "f")
    match = _FRACTION.fullmatch(text)
    if match:
        sign, a, b = match.group(1), int(match.group(2) or match.group(4)), int(match.group(3) or match.group(5))
        if b == 0:
            return WRONG_TEXT
        numerator = (-a if sign == "-" else a) + b
        return ("-" if numerator < 0 else "") + f"\\frac{{{abs(numerator)}}}{{{b}}}"
    if text and not _NOT_SCALAR.search(text):
        scale = "2\\cdot" if "." in text else ""
        return f"{scale}\\left({text}\\right)+1"
    return WRONG_TEXT


@dataclass(frozen=True)
class PreflightProblem:
    """One disagreement: what was scored for which row, the reward it got and the reward it had to get."""

    index: int
    task_name: str
    reference: str
    check: str  # "ground_truth", "corrupted" or "empty_program", after "<function>: " for a reward function
    scored: str
    expected: float | None  # None: any finite number (a reward function's probe)
    reward: float
    error: str | None
    detail: str | None

    def describe(self) -> str:
        failure = f" [{self.error}: {self.detail}]" if self.error else ""
        expected = "a clean call" if self.expected is None else f"{self.expected:g}"
        return (
            f"row {self.index} ({self.task_name}): reference {self.reference!r}; scored {self.check} "
            f"{self.scored!r} -> reward {self.reward:g}, expected {expected}{failure}"
        )


@dataclass
class PreflightReport:
    """Outcome of :func:`preflight`: rows checked, responses scored, and every disagreement."""

    rows: int
    scored: int
    problems: list[PreflightProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self, source: str | None = None, max_listed: int = 20) -> str:
        where = f" in {source}" if source else ""
        lines = [
            f"reward function not validated on {len({p.index for p in self.problems})} of {self.rows} rows{where}: "
            "each math row's own ground truth must score 1.0 and a corrupted answer 0.0; "
            "an empty program must score 0.0 on each code row's tests; "
            "each env.reward_functions callable must return a number for each of these responses"
        ]
        lines += ["  " + p.describe() for p in self.problems[:max_listed]]
        if len(self.problems) > max_listed:
            lines.append(f"  ... and {len(self.problems) - max_listed} more")
        lines.append("Fix or drop these rows (e.g. ground truths math-verify cannot parse, tests that always pass).")
        return "\n".join(lines)


def _probes(index: int, row: dict) -> list[tuple[str, str, float]]:
    """(check, response, expected reward) pairs for one row."""
    task = row.get("task_name")
    if not isinstance(task, str):
        raise DataError(f"row {index} has no string 'task_name' (keys: {sorted(row)})")
    verifier = get_verifier(task)
    try:
        reference = verifier.reference(row)
    except DataError as exc:
        raise DataError(f"row {index} (task {task!r}): {exc}") from None
    if verifier.name == "math":
        return [
            ("ground_truth", f"\\boxed{{{reference}}}", 1.0),
            ("corrupted", f"\\boxed{{{corrupt_answer(reference)}}}", 0.0),
        ]
    # A program that runs and does nothing (an empty response would be refused before reaching the tests).
    return [("empty_program", EMPTY_PROGRAM, 0.0)]


def preflight(
    rows: Sequence[dict],
    *,
    scorer: RewardScorer | None = None,
    source: str | None = None,
    functions: Sequence[RewardFunction] | None = None,
) -> PreflightReport:
    """Check the verifiers and reward functions against every row (see module doc); raise ``UserError`` naming
    the rows that disagree. ``functions``: the run's ``env.reward_functions`` (None: the verifier alone)."""
    functions = list(functions or [RewardFunction(VERIFIER, VERIFIER, 1.0)])
    task_names, responses, probe_rows, meta = [], [], [], []
    for index, row in enumerate(rows):
        for check, response, expected in _probes(index, row):
            for function in functions:
                if function.is_verifier:
                    task_names.append(row["task_name"])
                    probe_rows.append(row)
                    meta.append((index, check, expected))
                else:
                    task_names.append(INTERNAL_NAME)
                    probe_rows.extend(tag_rows([row], function))
                    meta.append((index, f"{function.name}: {check}", None))
                responses.append(response)
    result = (scorer or default_scorer()).score_batch(task_names, responses, probe_rows)
    report = PreflightReport(rows=len(rows), scored=len(responses))
    for k, (index, check, expected) in enumerate(meta):
        wrong = result.per_row_error[k] is not None if expected is None else result.rewards[k] != expected
        if wrong:
            row = rows[index]
            reference = row.get("ground_truth", row.get("tests"))
            report.problems.append(
                PreflightProblem(
                    index,
                    row["task_name"],
                    str(reference)[:200],
                    check,
                    responses[k][:200],
                    expected,
                    result.rewards[k],
                    result.per_row_error[k],
                    result.details[k],
                )
            )
    if not report.ok:
        raise UserError(report.format(source), code=ERROR_CODE)
    return report


def gym_preflight(rows: Sequence[dict], client: Any, *, source: str | None = None) -> PreflightReport:
    """The pre-flight of NeMo-Gym rows, through the resource servers themselves.

    Rows carrying ``expected_answer`` (math servers) must score 1.0 with ``\\boxed{answer}`` and 0.0 with a
    corrupted answer; rows with unit tests (code servers) must score 0.0 with a do-nothing program. Other agents'
    rows cannot be probed without knowing their answer format and are only counted.
    """
    probes, meta = [], []
    for index, row in enumerate(rows):
        answer = (row.get("gym") or {}).get("expected_answer")
        tests = ((row.get("gym") or {}).get("verifier_metadata") or {}).get("unit_tests")
        if answer is not None:
            checks = [
                ("ground_truth", f"\\boxed{{{answer}}}", 1.0),
                ("corrupted", f"\\boxed{{{corrupt_answer(str(answer))}}}", 0.0),
            ]
        elif tests is not None:
            checks = [("empty_program", "```python\npass\n```", 0.0)]
        else:
            continue
        for check, response, expected in checks:
            probes.append((row, response))
            meta.append((index, check, expected, str(answer if answer is not None else tests)))
    rewards, _ = client.score([r for r, _ in probes], [resp for _, resp in probes]) if probes else ([], {})
    report = PreflightReport(rows=len(rows), scored=len(probes))
    for k, (index, check, expected, reference) in enumerate(meta):
        if rewards[k] != expected:
            report.problems.append(
                PreflightProblem(
                    index, "nemo_gym", reference[:200], check, probes[k][1][:200], expected, rewards[k], None, None
                )
            )
    if not report.ok:
        raise UserError(report.format(source), code=ERROR_CODE)
    return report
