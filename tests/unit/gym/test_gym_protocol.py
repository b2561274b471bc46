"""The Gym /verify and liveness shapes: texts become Responses-API objects and verify bodies round-trip."""

from __future__ import annotations

import math

import pytest

from rlvr.gym.protocol import (
    ProtocolError,
    VerifyResult,
    build_response,
    build_verify_request,
    build_verify_response,
    health_verdict,
    parse_verify_response,
    response_text,
    split_thinking,
)

RCP = {
    "input": [{"role": "user", "content": "2+2?"}],
    "tools": [{"type": "function", "name": "calc"}],
    "temperature": 0.7,
    "parallel_tool_calls": False,
}
THINK = ("<think>", "</think>")


def test_response_has_the_responses_api_shape() -> None:
    """A text becomes one completed assistant message with one output_text part; request params are echoed."""
    response = build_response("the answer is \\boxed{4}", RCP, model="m")
    required = {"id", "object", "created_at", "model", "output", "parallel_tool_calls", "tool_choice", "tools"}
    assert required <= response.keys()
    assert response["object"] == "response" and response["status"] == "completed" and response["model"] == "m"
    assert response["tools"] == RCP["tools"] and response["temperature"] == 0.7
    assert response["parallel_tool_calls"] is False and response["tool_choice"] == "auto"
    [message] = response["output"]
    assert message["type"] == "message" and message["role"] == "assistant" and message["status"] == "completed"
    assert message["content"] == [{"type": "output_text", "text": "the answer is \\boxed{4}", "annotations": []}]
    assert response_text(response) == "the answer is \\boxed{4}"


def test_incomplete_generation_is_marked() -> None:
    """A generation cut at the token limit is an incomplete response with reason max_output_tokens."""
    response = build_response("partial", None, incomplete=True)
    assert response["status"] == "incomplete" and response["output"][0]["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>a+b</think>\\boxed{3}", ("a+b", "\\boxed{3}")),
        ("  <think>x</think>y</think>z", ("x", "y</think>z")),  # the first closing tag ends the thinking
        ("no tags at all", (None, "no tags at all")),
        ("<think>cut off while thinking", ("cut off while thinking", "")),
        ("implicit open</think>answer", ("implicit open", "answer")),
    ],
)
def test_split_thinking(text: str, expected: tuple) -> None:
    """Thinking is what precedes the first closing tag; a text without tags is all answer."""
    assert split_thinking(text, THINK) == expected
    assert split_thinking(text, None) == (None, text)


def test_thinking_goes_into_a_reasoning_item_that_is_not_the_answer() -> None:
    """With thinking tags, the thinking is a reasoning item before the message and response_text skips it."""
    response = build_response("<think>2+2 is 4</think>\\boxed{4}", RCP, thinking_tags=THINK)
    reasoning, message = response["output"]
    assert reasoning["type"] == "reasoning" and reasoning["summary"] == [{"type": "summary_text", "text": "2+2 is 4"}]
    assert message["type"] == "message"
    assert response_text(response) == "\\boxed{4}"


def test_response_text_concatenates_output_text_of_messages_only() -> None:
    """Only output_text parts of message items count (refusals, reasoning, tool calls do not), in order."""
    response = {
        "output": [
            {
                "type": "message",
                "content": [{"type": "output_text", "text": "a"}, {"type": "refusal", "refusal": "no"}],
            },
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "hidden"}]},
            {"type": "function_call", "name": "f", "arguments": "{}"},
            {"type": "message", "content": [{"type": "output_text", "text": "b"}]},
        ]
    }
    assert response_text(response) == "ab"
    with pytest.raises(ProtocolError):
        response_text({"no": "output"})


def test_verify_request_is_the_row_without_agent_ref_plus_response() -> None:
    """As Gym's rollout collection does: agent_ref only picks the agent; every server field is passed on."""
    row = {
        "responses_create_params": RCP,
        "agent_ref": {"name": "math_with_judge_simple_agent"},
        "question": "2+2?",
        "expected_answer": "4",
        "verifier_metadata": {"k": 1},
    }
    response = build_response("4", RCP)
    body = build_verify_request(row, response)
    assert "agent_ref" not in body
    assert body == {
        "responses_create_params": RCP,
        "question": "2+2?",
        "expected_answer": "4",
        "verifier_metadata": {"k": 1},
        "response": response,
    }
    with pytest.raises(ProtocolError, match="responses_create_params"):
        build_verify_request({"question": "x"}, response)


def test_verify_response_round_trip() -> None:
    """What a server builds from a result is read back as the same result; echoed request fields are dropped."""
    request = {"responses_create_params": RCP, "expected_answer": "4", "response": build_response("4", RCP)}
    result = VerifyResult(
        0.0, True, "rlvr:timeout", "math-verify alarm", {"extracted_answer": "4", "expected_answer": "4"}
    )
    body = build_verify_response(request, result)
    assert body["reward"] == 0.0 and body["mask_sample"] is True and body["response"] == request["response"]
    parsed = parse_verify_response(body, request)
    assert parsed == VerifyResult(0.0, True, "rlvr:timeout", "math-verify alarm", {"extracted_answer": "4"})
    assert parse_verify_response({"reward": 1}) == VerifyResult(1.0)


@pytest.mark.parametrize(
    "body",
    [
        {"mask_sample": False},
        {"reward": None},
        {"reward": "1.0"},
        {"reward": True},
        {"reward": math.nan},
        {"reward": 1.0, "mask_sample": "no"},
        {"reward": 1.0, "failure_kind": 3},
        [1.0],
        "reward",
    ],
)
def test_a_body_without_a_valid_reward_is_a_protocol_error(body: object) -> None:
    """A missing, non-numeric, boolean or non-finite reward is an error, never read as 0."""
    with pytest.raises(ProtocolError):
        parse_verify_response(body)


@pytest.mark.parametrize(
    "path, status, expected",
    [
        ("/health", 200, True),
        ("/health", 204, True),
        ("/health", 404, None),
        ("/health", 405, None),
        ("/health", 500, False),
        ("/health", 503, False),
        ("/health", 401, False),
        ("/", 200, True),
        ("/", 404, True),
        ("/", 500, False),
    ],
)
def test_health_verdict(path: str, status: int, expected: bool | None) -> None:
    """/health 2xx is alive; 404/405 there falls back to /, where any non-5xx answer (old Gym) is alive."""
    assert health_verdict(path, status) is expected
