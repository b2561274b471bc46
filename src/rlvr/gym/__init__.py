"""NeMo-Gym rewards: speak the Gym resource-server protocol over HTTP (NeMo-Gym itself needs Python >= 3.12).

* :mod:`~rlvr.gym.protocol` — the ``/verify`` request/response and liveness shapes; text -> Responses-API object.
* :mod:`~rlvr.gym.transport` — one JSON exchange over ``http.client`` (no proxies, one connection per request).
* :mod:`~rlvr.gym.verifiers` — Gym ``math_with_judge`` / ``code_gen`` semantics on our math and code verifiers.
* :mod:`~rlvr.gym.server` — our resource servers (``python -m rlvr.gym.server``), in a thread or a child process.
* :mod:`~rlvr.gym.routing` — ``agent_ref.name`` -> configured resource server.
* :mod:`~rlvr.gym.client` — :class:`GymRewardClient`: start, health-check, score with retries, close.
"""

from rlvr.gym.client import GymRewardClient, GymScore, local_options_from_env
from rlvr.gym.protocol import VerifyResult, build_response, build_verify_request, parse_verify_response

__all__ = [
    "GymRewardClient",
    "GymScore",
    "VerifyResult",
    "build_response",
    "build_verify_request",
    "local_options_from_env",
    "parse_verify_response",
]
