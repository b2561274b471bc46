"""Math verifier: math-verify configured exactly as NeMo-RL's default ``hf_math_verify``.

The gold answer is ``"\\boxed{" + ground_truth + "}"`` parsed with the LaTeX extractor; the prediction is the whole
response, parsed with the expression and the LaTeX extractors, so a ``\\boxed{}`` answer is preferred but a plain
final expression can also match. Library defaults apply: ``aggregation_function=max``, ``precision=6``. The reward
is 1.0 or 0.0.

Failures are scored 0.0 like NeMo-RL does, but never silently: each :class:`~rlvr.rewards.verdict.Verdict` names
its cause. math-verify swallows its own timeouts (it logs a warning and returns "no match"), so the warnings of its
loggers are captured per check and a swallowed timeout that left the reward at 0 is reported as a ``timeout``.

Exact fast path: most answers are written as plain numbers or fractions (the tiny policy answers ``95``, a LaTeX
policy ``\\boxed{\\frac{3}{4}}``), and math-verify spends a millisecond or more on each (two parses through
sympy) to compare two exact rationals. :func:`exact_answer` decides those in microseconds, and only them:

* 1.0 when the ground truth is a plain decimal number and the response is that same string (as before);
* otherwise, when the ground truth is an integer (at most 12 digits) or ``\\frac{p}{q}`` (also ``\\dfrac``,
  ``\\tfrac``, a leading ``-``) and the response states one such value, 1.0 when the two are equal rationals and
  0.0 when they are not: math-verify compares two sympy Integers or Rationals exactly (no float rounding applies
  to them), so this is its verdict;
* the response "states" an answer when it is nothing but the answer (a bare integer; fractions only in a box), or
  holds it as the only ``\\boxed{}`` in text that math-verify cannot extract anything else from.

In every other case it returns None and math-verify decides. ``tests/unit/rewards/test_math_verifier.py`` checks
that it agrees with math-verify on every case it decides (right and wrong answers, equal values in other forms),
and declines the cases where equal strings are not equal answers to math-verify (``+5``, ``1e5``, ``x``, a
5,000-digit integer) or where a decimal meets a fraction (math-verify rounds floats to 6 places).

math-verify's timeouts use ``signal.alarm``, which only works in a process's main thread: call :func:`check_math`
from a main thread (the :class:`~rlvr.rewards.verifier_pool.VerifierPool` workers do), never from a thread pool
(the fast path alone needs no main thread).
"""

from __future__ import annotations

import logging
import re
import threading
from fractions import Fraction
from typing import Any

from rlvr.errors import DataError
from rlvr.rewards.verdict import EXCEPTION, TIMEOUT, Verdict

# Ground truths the fast path may decide: plain decimals, no sign but "-", no exponent, no separators. Length-capped:
# Python refuses to parse integers of more than 4,300 digits, so math-verify scores a 5,000-digit answer 0.
_PLAIN_NUMBER = re.compile(r"-?[0-9]{1,40}(?:\.[0-9]{1,40})?")
# The only \boxed{...} of a response, with the text around it. Around it only letters, spaces and sentence
# punctuation: no digit, "$", "\\", brace or operator that math-verify's expression and LaTeX extractors could take
# (its "final answer is N" patterns outrank the box, but they need a number or a LaTeX environment).
_BOXED = re.compile(r"([A-Za-z\s.,;:!?']*)\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}([A-Za-z\s.,;:!?']*)")
# Exact rationals the fast path may value: integers of at most 12 digits (far from math-verify's 15-digit numeric
# precision and Python's 4,300-digit limit), without "+", "-0" or leading zeros, and fractions of them.
_INTEGER = re.compile(r"0|-?[1-9][0-9]{0,11}")
_FRACTION = re.compile(r"(-?)\\[dt]?frac\{(0|[1-9][0-9]{0,11})\}\{([1-9][0-9]{0,11})\}")

_metric = None
_log_watch: _TimeoutLogWatch | None = None


class _TimeoutLogWatch(logging.Handler):
    """Swallows math-verify's log output and remembers whether a parse/compare timeout was logged."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.timed_out = False

    def emit(self, record: logging.LogRecord) -> None:
        # Only parse/compare timeouts can change the reward; the string-conversion timeout in
        # math_metric ("Timeout when adding extracted predictions ...") only affects debug output.
        message = record.getMessage()
        if message.startswith("Timeout during"):
            self.timed_out = True


def _get_metric():
    """Build math-verify's sample-level metric once per process (and route its logging to the watcher)."""
    global _metric, _log_watch
    if _metric is None:
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, math_metric

        _log_watch = _TimeoutLogWatch()
        library_logger = logging.getLogger("math_verify")
        library_logger.addHandler(_log_watch)
        library_logger.setLevel(logging.WARNING)
        library_logger.propagate = False  # NeMo-RL suppresses the library's per-sample warnings too
        _metric = math_metric(
            gold_extraction_target=(LatexExtractionConfig(),),
            pred_extraction_target=(ExprExtractionConfig(), LatexExtractionConfig()),
        )
    return _metric


def ground_truth_of(row: dict[str, Any]) -> str:
    """The ground-truth answer of a canonical math row (``ground_truth``), as text."""
    if "ground_truth" not in row or row["ground_truth"] is None:
        raise DataError(
            f"math row has no 'ground_truth' (keys: {sorted(row)}); rl_prep writes it for math rows — "
            "re-run data preparation or add the field"
        )
    value = row["ground_truth"]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"math row 'ground_truth' must be a string or number, got {type(value).__name__}: {value!r}")
    return str(value)


def _exact_value(text: str) -> Fraction | None:
    """The value of an integer or fraction written as :data:`_INTEGER` / :data:`_FRACTION`, else None."""
    if _INTEGER.fullmatch(text):
        return Fraction(int(text))
    fraction = _FRACTION.fullmatch(text)
    if fraction is None:
        return None
    value = Fraction(int(fraction.group(2)), int(fraction.group(3)))
    return -value if fraction.group(1) else value


def exact_answer(response: str, ground_truth: str) -> Verdict | None:
    """math-verify's reward where the answer is exact and stated alone (module docstring), else None."""
    truth, answer = ground_truth.strip(), response.strip()
    boxed = _BOXED.fullmatch(answer)
    if boxed is not None and "boxed" in boxed.group(1) + boxed.group(3):
        boxed = None  # a second box math-verify could read
    stated = boxed.group(2).strip() if boxed is not None else answer
    if stated == truth and _PLAIN_NUMBER.fullmatch(truth):
        return Verdict(1.0)
    if boxed is None and not _INTEGER.fullmatch(answer):
        return None  # a bare fraction or decimal is left to math-verify's extractors
    truth_value, value = _exact_value(truth), _exact_value(stated)
    if truth_value is None or value is None:
        return None
    return Verdict(float(value == truth_value))


def check_math(response: str, ground_truth: str) -> Verdict:
    """Score ``response`` against ``ground_truth``: the exact-match fast path, else math-verify; never raises."""
    fast = exact_answer(response, str(ground_truth))
    return fast if fast is not None else check_with_math_verify(response, ground_truth)


def check_with_math_verify(response: str, ground_truth: str) -> Verdict:
    """Score with math-verify alone (NeMo-RL's ``hf_math_verify``); 1.0 if equivalent, else 0.0, never raises."""
    if threading.current_thread() is not threading.main_thread():
        return Verdict(0.0, EXCEPTION, "math-verify needs a main thread (signal alarms); score through the pool")
    metric = _get_metric()
    assert _log_watch is not None
    _log_watch.timed_out = False
    gold = "\\boxed{" + str(ground_truth) + "}"
    try:
        reward, _ = metric([gold], [response])
    except Exception as exc:  # noqa: BLE001 - any library failure is a counted 0, as in NeMo-RL
        return Verdict(0.0, EXCEPTION, f"{type(exc).__name__}: {str(exc)[:300]}")
    except BaseException as exc:  # math_verify.errors.TimeoutException derives from BaseException
        if type(exc).__name__ == "TimeoutException":
            return Verdict(0.0, TIMEOUT, "math-verify alarm")
        raise
    reward = float(reward)
    if reward <= 0.0 and _log_watch.timed_out:
        return Verdict(0.0, TIMEOUT, "math-verify parse/compare timeout")
    return Verdict(reward)


class MathVerifier:
    """Registry entry for env ``math``: the reference of a row is its ``ground_truth`` string."""

    name = "math"
    # math-verify needs a main thread and may hang inside C code: run checks in killable worker processes.
    isolation = "worker_pool"

    def reference(self, row: dict[str, Any]) -> str:
        return ground_truth_of(row)

    def quick_check(self, response: str, reference: Any) -> Verdict | None:
        return exact_answer(response, reference)

    def check(self, response: str, reference: Any) -> Verdict:
        return check_math(response, reference)

    def __call__(self, response: str, reference: Any) -> float:
        return self.check(response, reference).reward
