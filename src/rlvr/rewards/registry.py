"""Verifiers by env name: the string a row's ``task_name`` routes to (``math``, ``code``).

A verifier is a pure scorer, ``verifier(response, reference) -> reward``, that knows nothing of training. It also
says how its ``reference`` is read from a canonical rl_prep row (:meth:`Verifier.reference`) and where its checks
must run (:attr:`Verifier.isolation`): ``"worker_pool"`` checks run in the scorer's killable worker processes,
``"sandbox"`` checks start their own sandboxed process and may be called from threads. :meth:`Verifier.quick_check`
decides the easy cases in the caller before any of that (math: an answer written exactly as the ground truth).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from rlvr.errors import ConfigError
from rlvr.rewards.verdict import Verdict


class Verifier(Protocol):
    name: str
    isolation: Literal["worker_pool", "sandbox"]

    def reference(self, row: dict[str, Any]) -> Any:
        """The reference answer of a canonical row (raises :class:`rlvr.errors.DataError` when missing)."""

    def quick_check(self, response: str, reference: Any) -> Verdict | None:
        """A verdict that needs no isolation (cheap and safe in the caller's thread), or None to run :meth:`check`."""

    def check(self, response: str, reference: Any) -> Verdict:
        """Score one response; never raises, failures are returned as a Verdict with an error cause."""

    def __call__(self, response: str, reference: Any) -> float:
        """The reward alone."""


_VERIFIERS: dict[str, Verifier] = {}
# Entries the scorer routes internal checks to, never a row's task_name (not listed as known env names).
_INTERNAL: dict[str, Verifier] = {}


def register_verifier(verifier: Verifier) -> Verifier:
    """Add ``verifier`` under ``verifier.name``; a second verifier of the same name is a programming error."""
    if verifier.name in _VERIFIERS:
        raise ValueError(f"a verifier named {verifier.name!r} is already registered")
    _VERIFIERS[verifier.name] = verifier
    return verifier


def known_verifiers() -> list[str]:
    """Names of the registered verifiers, sorted."""
    return sorted(_VERIFIERS)


def get_verifier(name: str) -> Verifier:
    """The verifier registered as ``name``; an unknown name fails with the list of known ones."""
    try:
        return _VERIFIERS[name] if name in _VERIFIERS else _INTERNAL[name]
    except KeyError:
        raise ConfigError(
            f"unknown verifier (env name / task_name) {name!r}; known verifiers: {', '.join(known_verifiers())}"
        ) from None


def _register_builtins() -> None:
    from rlvr.rewards.code_verifier import CodeVerifier
    from rlvr.rewards.custom import RewardFunctionCheck
    from rlvr.rewards.math_verifier import MathVerifier

    register_verifier(MathVerifier())
    register_verifier(CodeVerifier())
    _INTERNAL[RewardFunctionCheck.name] = RewardFunctionCheck()  # env.reward_functions callables (custom.py)


_register_builtins()
