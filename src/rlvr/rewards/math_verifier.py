"""Math verifier: math-verify configured exactly as NeMo-RL's default ``hf_math_verify``.

The gold answer is ``"\\boxed{" + ground_truth + "}"`` parsed with the LaTeX extractor; the prediction is the whole
response, parsed with the expression and the LaTeX extractors, so a ``\\boxed{}`` answer is preferred but a plain
final expression can also match. Library defaults apply: ``aggregation_function=max``, ``precision=6``. The reward
is 1.0 or 0.0.

Failures are scored 0.0 like NeMo-RL does, but never silently: each :class:`~rlvr.rewards.verdict.Verdict` names
its cause. math-verify swallows its own timeouts (it logs a warning and returns "no match"), so the warnings of its
loggers are captured per check and a swallowed timeout that left the reward at 0 is reported as a ``timeout``.

Exact-match fast path: most correct answers are written exactly as the ground truth (the tiny policy answers
``95``, a LaTeX policy ``\\boxed{95}``), and math-verify spends about a millisecond on each (two parses through
sympy) to say so. :func:`exact_match` decides those in microseconds, and only them: it returns 1.0 when the ground
truth is a plain decimal number and the response is that same string, bare or as the only ``\\boxed{}`` in text
that math-verify cannot extract anything else from; in every other case it returns None and math-verify decides.
It never returns 0.0 (a different string can still be an equal number). ``tests/unit/rewards/test_math_verifier.py``
checks that it agrees with math-verify on every case it decides, and declines the cases where equal strings are not
equal answers to math-verify (``+5``, ``1e5``, ``x``, a 5,000-digit integer).

math-verify's timeouts use ``signal.alarm``, which only works in a process's main thread: call :func:`check_math`
from a main thread (the :class:`~rlvr.rewards.verifier_pool.VerifierPool` workers do), never from a thread pool
(the fast path alone needs no main thread).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

from rlvr.errors import DataError
from rlvr.rewards.verdict import EXCEPTION, TIMEOUT, Verdict

# Ground truths the fast path may decide: plain decimals, no sign but "-", no exponent, no separators. Length-capped:
# Python refuses to parse integers of more than 4,300 digits, so math-verify scores a 5,000-digit answer 0.
_PLAIN_NUMBER = re.compile(r"-?[0-9]{1,40}(?:\.[0-9]{1,40})?")
# The only \boxed{...} of a response, with the text around it. Around it only letters, spaces and sentence
# punctuation: no digit, "$", "\\", brace or operator that math-verify's expression and LaTeX extractors could take
# (its "final answer is N" patterns outrank the box, but they need a number or a LaTeX environment).
_BOXED = re.compile(r"([A-Za-z\s.,;:!?']*)\\boxed\{([^{}]*)\}([A-Za-z\s.,;:!?']*)")

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


def exact_match(response: str, ground_truth: str) -> Verdict | None:
    """1.0 when ``response`` states the plain-number ``ground_truth`` verbatim (module docstring), else None."""
    truth = ground_truth.strip()
    if not _PLAIN_NUMBER.fullmatch(truth):
        return None
    answer = response.strip()
    if answer != truth:
        boxed = _BOXED.fullmatch(answer)
        if boxed is None or "boxed" in boxed.group(1) + boxed.group(3) or boxed.group(2).strip() != truth:
            return None
    return Verdict(1.0)


def check_math(response: str, ground_truth: str) -> Verdict:
    """Score ``response`` against ``ground_truth``: the exact-match fast path, else math-verify; never raises."""
    return exact_match(response, str(ground_truth)) or check_with_math_verify(response, ground_truth)


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
        return exact_match(response, reference)

    def check(self, response: str, reference: Any) -> Verdict:
        return check_math(response, reference)

    def __call__(self, response: str, reference: Any) -> float:
        return self.check(response, reference).reward
