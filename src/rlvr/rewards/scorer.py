"""Score a batch of responses: route each row to its verifier, run checks in parallel, count failures by cause.

``task_names[i]`` is the env name of row ``i`` (``math``, ``code``; see :mod:`rlvr.rewards.registry`); ``rows`` are
canonical rl_prep rows (``ground_truth`` for math, ``tests`` for code). Checks of ``worker_pool`` verifiers run in
one :class:`~rlvr.rewards.verifier_pool.VerifierPool` created once per scorer and reused across batches; checks of
``sandbox`` verifiers (which start their own sandboxed process per program) run from a thread pool at the same time.
What a verifier's ``quick_check`` decides in this process (an exact math answer) never reaches either.

A failed check scores 0.0 and is counted in :attr:`ScoreResult.errors` under its cause, never dropped silently.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rlvr.errors import DataError
from rlvr.rewards.registry import get_verifier
from rlvr.rewards.verdict import ERROR_CAUSES, Verdict
from rlvr.rewards.verifier_pool import VerifierPool


@dataclass
class ScoreResult:
    """Per-row rewards and failure causes of one batch; ``errors`` counts every cause (0 when absent)."""

    rewards: list[float]
    errors: dict[str, int]
    per_row_error: list[str | None]
    details: list[str | None]

    @classmethod
    def from_verdicts(cls, verdicts: Sequence[Verdict]) -> ScoreResult:
        errors = dict.fromkeys(ERROR_CAUSES, 0)
        for verdict in verdicts:
            if verdict.error is not None:
                errors[verdict.error] = errors.get(verdict.error, 0) + 1
        return cls(
            rewards=[float(v.reward) for v in verdicts],
            errors=errors,
            per_row_error=[v.error for v in verdicts],
            details=[v.detail for v in verdicts],
        )

    def metrics(self, prefix: str = "reward_errors/") -> dict[str, float]:
        """Failure counts as flat metrics (``reward_errors/timeout``, ...) plus the total."""
        out = {f"{prefix}{cause}": float(count) for cause, count in self.errors.items()}
        out[f"{prefix}total"] = float(sum(self.errors.values()))
        return out


class RewardScorer:
    """Batch scorer owning a verifier worker pool and a sandbox thread pool; close it (or use ``with``).

    ``num_workers`` processes (default: all cores) run worker-pool checks, each limited to ``timeout_s`` seconds of
    wall clock; ``sandbox_concurrency`` (default: 2 × cores, since sandboxed programs mostly wait on process
    start-up) programs run at once. Nothing starts until the first batch.
    """

    def __init__(
        self,
        num_workers: int | None = None,
        timeout_s: float = 10.0,
        *,
        sandbox_concurrency: int | None = None,
        memory_limit_mb: int | None = 4096,
    ) -> None:
        self.pool = VerifierPool(num_workers, timeout_s, memory_limit_mb=memory_limit_mb)
        self.sandbox_concurrency = sandbox_concurrency or 2 * (os.cpu_count() or 1)
        self._threads: ThreadPoolExecutor | None = None

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes and the sandbox threads."""
        self.pool.close()
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
            self._threads = None

    def score_batch(self, task_names: Sequence[str], responses: Sequence[str], rows: Sequence[dict]) -> ScoreResult:
        """Score ``responses[i]`` against ``rows[i]`` with the verifier named ``task_names[i]``."""
        if not (len(task_names) == len(responses) == len(rows)):
            raise ValueError(
                f"score_batch needs one task name, response and row per sample; got {len(task_names)} task names, "
                f"{len(responses)} responses and {len(rows)} rows"
            )
        verdicts: list[Verdict | None] = [None] * len(rows)
        pooled: list[tuple[int, tuple[str, str, Any]]] = []
        sandboxed: list[tuple[int, Future]] = []
        for i, (name, response, row) in enumerate(zip(task_names, responses, rows)):
            verifier = get_verifier(name)
            if not isinstance(response, str):
                raise TypeError(f"response {i} must be a string, got {type(response).__name__}")
            try:
                reference = verifier.reference(row)
            except DataError as exc:
                raise DataError(f"row {i} (task {name!r}): {exc}") from None
            quick = verifier.quick_check(response, reference)
            if quick is not None:
                verdicts[i] = quick
            elif verifier.isolation == "worker_pool":
                pooled.append((i, (name, response, reference)))
            else:
                sandboxed.append((i, self._thread_pool().submit(verifier.check, response, reference)))
        for (i, _), verdict in zip(pooled, self.pool.run([task for _, task in pooled])):
            verdicts[i] = verdict
        for i, future in sandboxed:
            verdicts[i] = future.result()
        return ScoreResult.from_verdicts(verdicts)  # type: ignore[arg-type]  # every slot is filled

    def _thread_pool(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.sandbox_concurrency, thread_name_prefix="rlvr-sandbox")
        return self._threads


_default_scorer: RewardScorer | None = None


def default_scorer() -> RewardScorer:
    """The process-wide scorer, created on first use and closed at interpreter exit."""
    global _default_scorer
    if _default_scorer is None:
        _default_scorer = RewardScorer()
        atexit.register(_default_scorer.close)
    return _default_scorer


def score_batch(
    task_names: Sequence[str], responses: Sequence[str], rows: Sequence[dict], *, scorer: RewardScorer | None = None
) -> ScoreResult:
    """Score a batch with ``scorer`` (default: the process-wide :func:`default_scorer`)."""
    return (scorer or default_scorer()).score_batch(task_names, responses, rows)


def scorer_from_env(env: dict[str, Any]) -> RewardScorer:
    """A scorer set up from the step config's complete ``env`` section (every key present, as the loader fills it).

    ``env.math``: ``num_workers`` verifier processes, ``timeout_s`` per check. ``env.code``: ``timeout_s`` per test
    case, ``memory_mb`` per program, ``num_workers`` concurrent sandboxes, ``partial_credit``. The code settings are
    applied to the registered code verifier (sandboxed checks run in this process's threads).
    """
    from rlvr.rewards.sandbox import Sandbox, SandboxLimits

    math_cfg, code_cfg = env["math"], env["code"]
    code = get_verifier("code")
    code.partial_credit = bool(code_cfg["partial_credit"])
    limits = SandboxLimits(case_timeout_s=float(code_cfg["timeout_s"]), memory_mb=int(code_cfg["memory_mb"]))
    code.sandbox = Sandbox(limits, max_concurrency=code_cfg["num_workers"])
    return RewardScorer(
        num_workers=math_cfg["num_workers"],
        timeout_s=float(math_cfg["timeout_s"]),
        sandbox_concurrency=code_cfg["num_workers"],
    )
