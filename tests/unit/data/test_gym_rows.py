"""NeMo-Gym rows: responses_create_params kept or synthesised as the Gym runner does, agent_ref defaulted,
server fields kept, and the rules the schema cannot express (agent_ref, known agents' verifier fields)."""

from __future__ import annotations

import pytest

from rlvr.data.gym import GymRows, chat_turns, responses_create_params
from rlvr.data.row_schemas import MISSING_VERIFIER_FIELDS

REF = {"type": "responses_api_agents", "name": "math_with_judge_simple_agent"}


def test_existing_responses_create_params_are_kept_and_server_fields_survive():
    """A row with responses_create_params and agent_ref passes through unchanged (problem = last user turn)."""
    row = {
        "responses_create_params": {"input": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]},
        "agent_ref": REF,
        "question": "q",
        "expected_answer": "4",
        "uuid": "abc",
    }
    out = GymRows().convert(row)
    assert out == {"problem": "q", "gym": row}


def test_extra_env_info_params_are_used_when_the_row_has_none():
    """Legacy rows carry the request under extra_env_info; it becomes responses_create_params."""
    params = {"input": [{"role": "user", "content": "q"}]}
    row = {"extra_env_info": {"responses_create_params": params}, "expected_answer": "1"}
    out = GymRows(REF).convert(row)
    assert out["gym"]["responses_create_params"] is params
    assert out["gym"]["extra_env_info"] == {"responses_create_params": params}


@pytest.mark.parametrize(
    ("row", "turns"),
    [
        (
            {"messages": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}]},
            [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        ),
        ({"messages": [{"role": "user", "content": "q"}]}, [{"role": "user", "content": "q"}]),
        ({"prompt": "q"}, [{"role": "user", "content": "q"}]),
        ({"prompt": ["a", "q"]}, [{"role": "user", "content": "a"}, {"role": "user", "content": "q"}]),
        ({"question": "q", "problem": "not used"}, [{"role": "user", "content": "q"}]),
        ({"problem": "q"}, [{"role": "user", "content": "q"}]),
        ({"input": "q"}, [{"role": "user", "content": "q"}]),
    ],
)
def test_params_are_synthesised_from_prompt_fields(row, turns):
    """messages / prompt / question / problem / input become responses_create_params.input, in that priority."""
    assert responses_create_params({**row, "expected_answer": "1"}) == {"input": turns}


def test_tools_are_copied_into_synthesised_params_and_agent_ref_defaults():
    """A synthesised request gets the row's tools; a missing agent_ref becomes data.default_agent_ref."""
    tools = [{"type": "function", "name": "calc"}]
    out = GymRows(REF).convert({"question": "2+2?", "expected_answer": "4", "tools": tools})
    assert out["gym"]["responses_create_params"] == {"input": [{"role": "user", "content": "2+2?"}], "tools": tools}
    assert out["gym"]["agent_ref"] == REF
    assert out["gym"]["question"] == "2+2?" and out["problem"] == "2+2?"


def test_missing_agent_ref_without_default_is_reported():
    """No agent_ref and no data.default_agent_ref: the row is rejected, naming agent_ref and the fix."""
    fmt = GymRows(None)
    assert fmt.convert({"question": "q"}) is None
    [problem] = fmt.diagnose({"question": "q"})
    assert problem.field == "agent_ref" and "data.default_agent_ref" in problem.message


def test_known_agents_need_their_verifier_fields():
    """math_with_judge rows need expected_answer; code_gen rows need verifier_metadata.unit_tests."""
    fmt = GymRows()
    math_row = {"question": "q", "agent_ref": REF}
    assert fmt.convert(math_row) is None
    [problem] = fmt.diagnose(math_row)
    assert (problem.field, problem.code) == ("expected_answer", MISSING_VERIFIER_FIELDS)
    code_ref = {"type": "responses_api_agents", "name": "code_gen_simple_agent"}
    code_row = {"question": "q", "agent_ref": code_ref, "verifier_metadata": {}}
    assert [p.field for p in fmt.diagnose(code_row)] == ["verifier_metadata.unit_tests"]
    code_row["verifier_metadata"] = {"unit_tests": {"inputs": ["1"], "outputs": ["1"]}}
    assert fmt.convert(code_row) is not None
    other = {"question": "q", "agent_ref": {"name": "my_custom_agent"}}
    assert fmt.convert(other) is not None  # unknown agents: their server owns the fields


def test_row_without_any_prompt_field_fails_the_schema():
    """A row with none of the prompt sources is rejected by the schema's anyOf."""
    fmt = GymRows(REF)
    assert fmt.convert({"expected_answer": "1"}) is None
    assert fmt.diagnose({"expected_answer": "1"})[0].code is None


def test_chat_turns_flatten_content_parts_and_skip_items_without_role():
    """Responses API content parts are joined; function-call items (no role) are not chat turns."""
    params = {
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
            {"type": "function_call_output", "output": "x"},
        ]
    }
    assert chat_turns(params) == [{"role": "user", "content": "ab"}]
    assert chat_turns({"input": "hi"}) == [{"role": "user", "content": "hi"}]
