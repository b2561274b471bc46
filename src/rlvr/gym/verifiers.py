"""What our resource servers do on ``/verify``: Gym ``math_with_judge`` and ``code_gen`` semantics on our verifiers.

* kind ``math`` (Gym ``math_with_judge`` with ``should_use_judge: false``, as Nemotron's nemo_gym config sets it):
  the answer text (see :func:`rlvr.gym.protocol.response_text`) scores 0 unless it holds a complete, non-blank
  **last** ``\\boxed{...}``; otherwise math-verify compares the whole answer with ``\\boxed{expected_answer}``,
  where outer ``\\( \\)`` or ``$ $`` delimiters are first stripped from ``expected_answer`` (exactly our native
  ``math`` verifier, :func:`rlvr.rewards.math_verifier.check_math`). Checks run in a
  :class:`~rlvr.rewards.verifier_pool.VerifierPool` (killable processes, hard timeout) fed in batches by one
  dispatcher thread, since math-verify needs a main thread and the pool is not thread-safe. The LLM judge is not
  implemented.
* kind ``code`` (Gym ``code_gen``): ``verifier_metadata.unit_tests = {inputs, outputs, fn_name}`` (LiveCodeBench
  format; or ``{"packed": base64(zlib(json {inputs, outputs})), "fn_name"}``) run through our sandboxed code
  verifier (:class:`rlvr.rewards.code_verifier.CodeVerifier`, which extracts the last fenced block, else the whole
  text). An empty answer scores 0. As in Gym, an answer that leaks ``<think>``/``</think>`` tags scores
  ``reasoning_format_penalty`` (default 0.0) instead.

A check that could not be completed (timeout, crash, sandbox error, ...) still has a reward (0.0, as the native
path scores it), and names its cause in ``failure_kind`` as ``rlvr:<cause>`` (Gym's ``<server>:<kind>`` form), so
the client counts it; ``mask_sample`` stays false, as Gym's own servers leave it for these cases. A malformed
request raises :class:`RequestError` (HTTP 422), never a reward.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import queue
import threading
import zlib
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from rlvr.errors import DataError
from rlvr.gym.protocol import ProtocolError, VerifyResult, response_text
from rlvr.rewards.code_verifier import CodeVerifier
from rlvr.rewards.sandbox import Sandbox, SandboxLimits
from rlvr.rewards.verdict import Verdict
from rlvr.rewards.verifier_pool import VerifierPool

_THINK_TAGS = ("<think>", "</think>")


class RequestError(ValueError):
    """The ``/verify`` request lacks a field the server needs (answered with HTTP 422)."""


def last_boxed(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}`` of ``text`` with balanced braces; ``None`` if absent or unclosed."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth = 0
    for end in range(start + len("\\boxed{") - 1, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            return text[start + len("\\boxed{") : end]
    return None


def strip_math_delimiters(answer: str) -> str:
    """``expected_answer`` without outer ``\\( ... \\)`` and then ``$ ... $`` (which would not parse inside a box)."""
    answer = answer.strip()
    if answer.startswith("\\(") and answer.endswith("\\)"):
        answer = answer[2:-2].strip()
    if len(answer) > 1 and answer[0] == "$" and answer[-1] == "$":
        answer = answer[1:-1].strip()
    return answer


def _answer_of(request: Mapping[str, Any]) -> str:
    if "response" not in request:
        raise RequestError("field 'response' is required")
    try:
        return response_text(request["response"])
    except ProtocolError as exc:
        raise RequestError(str(exc)) from None


def _failure(verdict: Verdict) -> dict[str, Any]:
    if verdict.error is None:
        return {}
    return {"failure_kind": f"rlvr:{verdict.error}", "failure_reason": verdict.detail}


class _PoolDispatcher:
    """Feeds checks from many request threads to one :class:`VerifierPool` in batches (the pool is single-caller)."""

    def __init__(self, pool: VerifierPool) -> None:
        self._pool = pool
        self._queue: queue.SimpleQueue[tuple[tuple[str, str, Any], Future] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="rlvr-gym-math", daemon=True)
        self._thread.start()

    def check(self, name: str, response: str, reference: Any) -> Verdict:
        future: Future = Future()
        self._queue.put(((name, response, reference), future))
        return future.result()

    def _loop(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            batch = []
            while item is not None:
                batch.append(item)
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            stop = item is None
            if not batch:
                continue
            try:
                verdicts = self._pool.run([task for task, _ in batch])
            except Exception as exc:  # noqa: BLE001 - every waiting request must hear about it (HTTP 500)
                for _, future in batch:
                    future.set_exception(exc)
            else:
                for (_, future), verdict in zip(batch, verdicts):
                    future.set_result(verdict)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._pool.close()


class GymMathVerifier:
    """Kind ``math``: Gym ``math_with_judge`` semantics (no judge) with math-verify in killable processes."""

    kind = "math"

    def __init__(self, num_workers: int | None = None, timeout_s: float = 10.0, memory_limit_mb: int | None = 4096):
        self._dispatcher = _PoolDispatcher(VerifierPool(num_workers, timeout_s, memory_limit_mb=memory_limit_mb))

    def verify(self, request: Mapping[str, Any]) -> VerifyResult:
        expected = request.get("expected_answer")
        if isinstance(expected, bool) or not isinstance(expected, (str, int, float)):
            raise RequestError(f"field 'expected_answer' (string) is required, got {expected!r}")
        answer = _answer_of(request)
        boxed = last_boxed(answer)
        extras: dict[str, Any] = {
            "expected_answer": str(expected),
            "extracted_answer": boxed,
            "judge_evaluations": None,
        }
        if boxed is None or not boxed.strip():
            return VerifyResult(0.0, extras={**extras, "library_reward": 0.0})
        verdict = self._dispatcher.check("math", answer, strip_math_delimiters(str(expected)))
        extras["library_reward"] = verdict.reward
        failure = _failure(verdict)
        return VerifyResult(verdict.reward, False, failure.get("failure_kind"), failure.get("failure_reason"), extras)

    def close(self) -> None:
        self._dispatcher.close()


def unit_tests_of(request: Mapping[str, Any]) -> dict[str, Any]:
    """``verifier_metadata.unit_tests`` as our code verifier's ``{"kind": "stdio", ...}`` tests (unpacked)."""
    metadata = request.get("verifier_metadata")
    raw = metadata.get("unit_tests") if isinstance(metadata, Mapping) else None
    if not isinstance(raw, Mapping):
        raise RequestError("field 'verifier_metadata.unit_tests' ({inputs, outputs, fn_name}) is required")
    if "packed" in raw:
        try:
            unpacked = json.loads(zlib.decompress(base64.b64decode(raw["packed"])))
        except (binascii.Error, zlib.error, ValueError, TypeError) as exc:
            raise RequestError(f"'verifier_metadata.unit_tests.packed' cannot be unpacked: {exc}") from None
        raw = {"inputs": unpacked.get("inputs"), "outputs": unpacked.get("outputs"), "fn_name": raw.get("fn_name")}
    return {"kind": "stdio", "inputs": raw.get("inputs"), "outputs": raw.get("outputs"), "fn_name": raw.get("fn_name")}


class GymCodeVerifier:
    """Kind ``code``: Gym ``code_gen`` semantics with our sandbox; safe to call from many threads."""

    kind = "code"

    def __init__(
        self,
        num_workers: int | None = None,
        timeout_s: float = 10.0,
        memory_mb: int = 1024,
        *,
        partial_credit: bool = False,
        reasoning_format_penalty: float = 0.0,
    ) -> None:
        self._sandbox = Sandbox(
            SandboxLimits(case_timeout_s=timeout_s, memory_mb=memory_mb), max_concurrency=num_workers
        )
        self._code = CodeVerifier(partial_credit=partial_credit, sandbox=self._sandbox)
        self.reasoning_format_penalty = reasoning_format_penalty

    def verify(self, request: Mapping[str, Any]) -> VerifyResult:
        tests = unit_tests_of(request)
        answer = _answer_of(request)
        if not answer.strip():
            return VerifyResult(0.0, extras={"extracted_model_output": answer})
        if any(tag in answer for tag in _THINK_TAGS):
            return VerifyResult(
                self.reasoning_format_penalty,
                extras={"extracted_model_output": answer, "reasoning_format_violation_rate": 1.0},
            )
        try:
            verdict = self._code.check(answer, tests)  # sandbox faults become a counted sandbox_error
        except DataError as exc:
            raise RequestError(f"verifier_metadata.unit_tests: {exc}") from None
        failure = _failure(verdict)
        return VerifyResult(
            verdict.reward,
            False,
            failure.get("failure_kind"),
            failure.get("failure_reason"),
            {"extracted_model_output": answer, "reasoning_format_violation_rate": 0.0},
        )

    def close(self) -> None:
        self._sandbox.close()


VERIFIER_KINDS = ("math", "code")


def capacity(kind: str, options: Mapping[str, Any] | None = None) -> int:
    """How many checks a verifier of ``kind`` runs at once: its ``num_workers``, else the pool/sandbox default."""
    workers = (options or {}).get("num_workers")
    if workers:
        return int(workers)
    cores = os.cpu_count() or 1
    return cores if kind == "math" else 2 * cores


def make_verifier(kind: str, options: Mapping[str, Any] | None = None) -> GymMathVerifier | GymCodeVerifier:
    """The verifier behind a local server of ``kind``; ``options`` are its constructor's keyword arguments."""
    options = dict(options or {})
    if kind == "math":
        return GymMathVerifier(**options)
    if kind == "code":
        return GymCodeVerifier(**options)
    raise ValueError(f"unknown resource server kind {kind!r}; known kinds: {', '.join(VERIFIER_KINDS)}")
