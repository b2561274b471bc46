"""Verifiable rewards: pure verifiers ``(response, reference) -> reward``, a batch scorer, and a reward pre-flight.

* :mod:`~rlvr.rewards.registry` — verifiers by env name (``math``, ``code``).
* :mod:`~rlvr.rewards.custom` — ``env.reward_functions``: your own callables, the format reward, the verifier.
* :mod:`~rlvr.rewards.combined` — all reward functions on a batch, combined by weight, each kept apart.
* :mod:`~rlvr.rewards.math_verifier` — math-verify as NeMo-RL's ``hf_math_verify`` uses it.
* :mod:`~rlvr.rewards.scorer` — :func:`score_batch` / :class:`RewardScorer`: parallel checks, failures by cause.
* :mod:`~rlvr.rewards.verifier_pool` — killable worker processes with a hard per-check timeout.
* :mod:`~rlvr.rewards.preflight` — ``reward_function_not_validated``: the verifier must tell right from wrong.
* :mod:`~rlvr.rewards.score_cli` — ``nemotron rewards score`` backend.
"""

from rlvr.rewards.math_verifier import check_math
from rlvr.rewards.preflight import PreflightReport, corrupt_answer, preflight
from rlvr.rewards.registry import get_verifier, known_verifiers, register_verifier
from rlvr.rewards.scorer import RewardScorer, ScoreResult, default_scorer, score_batch
from rlvr.rewards.verdict import ERROR_CAUSES, Verdict

__all__ = [
    "ERROR_CAUSES",
    "PreflightReport",
    "RewardScorer",
    "ScoreResult",
    "Verdict",
    "check_math",
    "corrupt_answer",
    "default_scorer",
    "get_verifier",
    "known_verifiers",
    "preflight",
    "register_verifier",
    "score_batch",
]
