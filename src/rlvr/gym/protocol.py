"""The NeMo-Gym resource-server protocol: the JSON shapes of ``/verify`` and of the liveness check.

NeMo-Gym (Python >= 3.12, not installable here) runs each resource server as a FastAPI app. We speak its wire
format with plain JSON; nothing here imports Gym. The shapes, as the public NVIDIA-NeMo/Gym sources define them
(``nemo_gym/base_resources_server.py``, ``resources_servers/{math_with_judge,code_gen}/app.py``):

**POST /verify — request** (``BaseVerifyRequest`` and the server's subclass): the dataset row as Gym's rollout
collection posts it to the agent's ``/run`` — every field of the JSONL row except ``agent_ref``, which only picks
the agent — plus ``response``::

    {"responses_create_params": {"input": [...], "tools": [...], ...},   # the row's, unchanged
     "question": "...", "expected_answer": "...",                          # math_with_judge fields
     "verifier_metadata": {"unit_tests": {"inputs": [...], "outputs": [...], "fn_name": null}},  # code_gen
     "response": <Response>}

``<Response>`` is an OpenAI Responses-API ``Response`` object (Gym's ``NeMoGymResponse``). Required keys: ``id``,
``object: "response"``, ``created_at``, ``model``, ``output``, ``parallel_tool_calls``, ``tool_choice``, ``tools``.
Each generated turn is an ``output`` item ``{"type": "message", "role": "assistant", "id", "status",
"content": [{"type": "output_text", "text", "annotations": []}]}``; thinking may come as a separate
``{"type": "reasoning", "id", "summary": [{"type": "summary_text", "text"}]}`` item. Servers read the answer as
the concatenated ``text`` of the ``output_text`` parts of the ``message`` items (``Response.output_text``), so
reasoning items are not part of the answer.

**POST /verify — response** (``BaseVerifyResponse``): the request echoed back plus ``reward`` (float, required),
``mask_sample`` (bool, default false: the reward is not a valid measurement, drop the sample from the loss),
``failure_kind`` (low-cardinality name such as ``verifier_error`` or a ``<server>:<kind>`` extension) and
``failure_reason`` (free text), and server-specific extras (math_with_judge: ``expected_answer``,
``extracted_answer``, ``library_reward``, ``judge_evaluations``). Invalid requests get HTTP 422 with a
``{"detail": ...}`` body (FastAPI's validation error).

**Liveness**: current Gym servers answer ``GET /health`` (also ``/healthz``, ``/livez``, ``/readyz`` and ``/``)
with ``{"status": "ok"}``. Older Gym servers had no such route and Gym itself counted any HTTP answer at ``/`` as
"up"; :func:`health_verdict` accepts both. Our own servers (:mod:`rlvr.gym.server`) serve ``/health`` and ``/``.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

HEALTH_PATH = "/health"
LEGACY_HEALTH_PATH = "/"
VERIFY_PATH = "/verify"
SEED_SESSION_PATH = "/seed_session"

#: Fields a /verify response may carry besides the echoed request; everything else is kept in ``extras``.
_RESULT_FIELDS = ("reward", "mask_sample", "failure_kind", "failure_reason")


class ProtocolError(ValueError):
    """A peer sent a body that does not follow the resource-server protocol."""


@dataclass(frozen=True)
class VerifyResult:
    """What a ``/verify`` answer says about one sample: its reward and whether/why it is not a valid measurement."""

    reward: float
    mask_sample: bool = False
    failure_kind: str | None = None
    failure_reason: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def split_thinking(text: str, tags: tuple[str, str] | None) -> tuple[str | None, str]:
    """``(thinking, answer)`` of a generated text, as a reasoning parser splits it.

    With ``tags = (open, close)``, as vLLM's ``<think>`` reasoning parsers split a text: everything before the
    first ``close`` tag is thinking (a leading ``open`` tag is dropped) and the rest is the answer; a text without
    ``close`` that starts with ``open`` is all thinking (the generation stopped while thinking); any other text is
    all answer. ``tags=None`` keeps the whole text as answer.
    """
    if tags is None:
        return None, text
    open_tag, close_tag = tags
    end = text.find(close_tag)
    stripped = text.lstrip()
    if end < 0:
        if stripped.startswith(open_tag):
            return stripped[len(open_tag) :], ""
        return None, text
    thinking = text[:end].lstrip()
    if thinking.startswith(open_tag):
        thinking = thinking[len(open_tag) :]
    return thinking, text[end + len(close_tag) :]


def build_response(
    text: str,
    responses_create_params: Mapping[str, Any] | None = None,
    *,
    model: str = "policy",
    thinking_tags: tuple[str, str] | None = None,
    incomplete: bool = False,
) -> dict[str, Any]:
    """A Responses-API ``Response`` holding one generated text as one assistant message.

    ``responses_create_params`` (the row's) supplies ``tools``, ``tool_choice``, ``parallel_tool_calls``,
    ``temperature`` and ``top_p``, as an OpenAI-compatible server echoes them. With ``thinking_tags`` the thinking
    part (see :func:`split_thinking`) becomes a ``reasoning`` item before the message. ``incomplete=True`` marks a
    generation cut at the token limit (``status: "incomplete"``, ``incomplete_details.reason: max_output_tokens``).
    """
    params = dict(responses_create_params or {})
    thinking, answer = split_thinking(text, thinking_tags)
    status = "incomplete" if incomplete else "completed"
    output: list[dict[str, Any]] = []
    if thinking is not None:
        output.append(
            {
                "id": _new_id("rs"),
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": thinking}],
            }
        )
    output.append(
        {
            "id": _new_id("msg"),
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [{"type": "output_text", "text": answer, "annotations": []}],
        }
    )
    return {
        "id": _new_id("resp"),
        "object": "response",
        "created_at": float(int(time.time())),
        "model": model,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
        "instructions": None,
        "metadata": None,
        "output": output,
        "parallel_tool_calls": bool(params.get("parallel_tool_calls", True)),
        "temperature": params.get("temperature"),
        "top_p": params.get("top_p"),
        "tool_choice": params.get("tool_choice", "auto"),
        "tools": list(params.get("tools") or []),
    }


def response_text(response: Any) -> str:
    """The answer of a ``Response``: the ``output_text`` parts of its ``message`` items, concatenated.

    Raises :class:`ProtocolError` when ``response`` is not an object with an ``output`` list.
    """
    if not isinstance(response, Mapping) or not isinstance(response.get("output"), list):
        raise ProtocolError("'response' must be a Responses-API object with an 'output' list")
    parts: list[str] = []
    for item in response["output"]:
        if not isinstance(item, Mapping) or item.get("type") != "message":
            continue
        content = item.get("content")
        if isinstance(content, str):  # lenient: an easy-input style message
            parts.append(content)
            continue
        for part in content if isinstance(content, list) else []:
            if isinstance(part, Mapping) and part.get("type") == "output_text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
    return "".join(parts)


def build_verify_request(gym_row: Mapping[str, Any], response: Mapping[str, Any]) -> dict[str, Any]:
    """The ``/verify`` body for one sample: the Gym row without ``agent_ref``, plus ``response``."""
    if "responses_create_params" not in gym_row:
        raise ProtocolError(f"a Gym row needs 'responses_create_params' (keys: {sorted(gym_row)})")
    body = {key: value for key, value in gym_row.items() if key != "agent_ref"}
    body["response"] = dict(response)
    return body


def parse_verify_response(body: Any, request: Mapping[str, Any] | None = None) -> VerifyResult:
    """Read a ``/verify`` answer; a missing or non-finite ``reward`` is a :class:`ProtocolError`, never a 0.

    ``extras`` keeps the server's own fields: what only echoes ``request`` (and ``response``) is left out.
    """
    if not isinstance(body, Mapping):
        raise ProtocolError(f"expected a JSON object, got {type(body).__name__}")
    reward = body.get("reward")
    if isinstance(reward, bool) or not isinstance(reward, (int, float)) or not math.isfinite(reward):
        raise ProtocolError(f"'reward' must be a finite number, got {reward!r}")
    mask = body.get("mask_sample", False)
    if not isinstance(mask, bool):
        raise ProtocolError(f"'mask_sample' must be a boolean, got {mask!r}")
    kind, reason = body.get("failure_kind"), body.get("failure_reason")
    if kind is not None and not isinstance(kind, str):
        raise ProtocolError(f"'failure_kind' must be a string or null, got {kind!r}")
    request = request or {}
    extras = {
        key: value
        for key, value in body.items()
        if key not in _RESULT_FIELDS and key != "response" and not (key in request and request[key] == value)
    }
    return VerifyResult(float(reward), mask, kind, None if reason is None else str(reason), extras)


def build_verify_response(request: Mapping[str, Any], result: VerifyResult) -> dict[str, Any]:
    """The server side of :func:`parse_verify_response`: the request echoed back with the result's fields."""
    body = dict(request)
    body.update(result.extras)
    body.update(
        reward=float(result.reward),
        mask_sample=result.mask_sample,
        failure_kind=result.failure_kind,
        failure_reason=result.failure_reason,
    )
    return body


def health_verdict(path: str, status: int) -> bool | None:
    """Is a server alive, given the HTTP ``status`` of ``GET path``? ``None``: ask :data:`LEGACY_HEALTH_PATH`.

    ``/health`` answering 2xx is alive; 404/405 there means a Gym server without liveness routes, so ``/`` is
    asked next, where any answer below 500 counts (as Gym's own poll does). A 5xx is never alive.
    """
    if 200 <= status < 300:
        return True
    if path == HEALTH_PATH and status in (404, 405):
        return None
    return path == LEGACY_HEALTH_PATH and status < 500
