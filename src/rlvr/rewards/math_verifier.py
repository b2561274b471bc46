"""Math verifier: math-verify configured exactly as NeMo-RL's default ``hf_math_verify``.

The gold answer is ``"\\boxed{" + ground_truth + "}"`` parsed with the LaTeX extractor; the prediction is the whole
response, parsed with the expression and the LaTeX extractors, so a ``\\boxed{}`` answer is preferred but a plain
final expression can also match. Library defaults apply: ``aggregation_function=max``, ``precision=6``. The reward
is 1.0 or 0.0.

Failures are scored 0.0 like NeMo-RL does, but never silently: each :class:`~rlvr.rewards.verdict.Verdict` names
its cause. math-verify swallows its own timeouts (it logs a warning and returns "no match"), so the warnings of its
loggers are captured per check and a swallowed timeout that left the reward at 0 is reported as a ``timeout``.

math-verify's timeouts use ``signal.alarm``, which only works in a process's main thread: call :func:`check_math`
from a main thread (the :class:`~rlvr.rewards.verifier_pool.VerifierPool` workers do), never from a thread pool.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from rlvr.errors import DataError
from rlvr.rewards.verdict import EXCEPTION, TIMEOUT, Verdict

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


def check_math(response: str, ground_truth: str) -> Verdict:
    """Score ``response`` against ``ground_truth`` with math-verify; 1.0 if equivalent, else 0.0, never raises."""
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

    def check(self, response: str, reference: Any) -> Verdict:
        return check_math(response, reference)

    def __call__(self, response: str, reference: Any) -> float:
        return self.check(response, reference).reward
