"""NeMo-Gym rows: check them (schema ``nemo_gym``) and normalise them the way Nemotron's Gym runner does.

Normalisation (Nemotron ``_normalize_nemo_gym_row``): keep ``responses_create_params`` when the row has it; else
take ``extra_env_info.responses_create_params``; else synthesise ``{"input": turns}`` from ``messages`` or
``prompt`` (a text, a list of texts, or chat turns; ShareGPT ``from``/``value`` turns become ``role``/``content``)
or from ``question`` / ``problem`` / ``input`` (one user turn), copying the row's ``tools``. ``agent_ref`` defaults
to ``data.default_agent_ref``. Every other field (the resource server's: ``question``, ``expected_answer``,
``verifier_metadata``, ...) is kept untouched.

Verifier fields belong to the resource server behind the row's agent, so they are checked only for the agents
listed in :data:`GYM_AGENT_VERIFIER_FIELDS`; other agents' rows pass through as they are.
"""

from __future__ import annotations

from rlvr.data.row_format import RowFormat
from rlvr.data.row_schemas import RowProblem

#: Agent name -> dotted paths of the fields its resource server verifies with (Gym ``math_with_judge``: the
#: reference answer; ``code_gen``: the unit tests).
GYM_AGENT_VERIFIER_FIELDS: dict[str, tuple[str, ...]] = {
    "math_with_judge_simple_agent": ("expected_answer",),
    "code_gen_simple_agent": ("verifier_metadata.unit_tests",),
}

# ShareGPT speaker names -> chat roles; other names are kept as the role.
_SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user", "assistant": "assistant"}

# Fields a prompt can be synthesised from, in the order the Gym runner tries them.
_TEXT_FIELDS = ("question", "problem", "input")


def _is_text(value: object) -> bool:
    return type(value) is str and value != ""


def _is_message(value: object) -> bool:
    if type(value) is not dict:
        return False
    if type(value.get("role")) is str and type(value.get("content")) in (str, list):
        return True
    return type(value.get("from")) is str and type(value.get("value")) is str


def _is_object_list(value: object) -> bool:
    return type(value) is list and all(type(item) is dict for item in value)


def _is_rcp(value: object) -> bool:
    """A valid ``responses_create_params``: a dict with a non-empty text or non-empty list of items as input."""
    if type(value) is not dict or "input" not in value:
        return False
    given = value["input"]
    if not (_is_text(given) or (type(given) is list and given and _is_object_list(given))):
        return False
    return "tools" not in value or _is_object_list(value["tools"])


def _valid_by_schema(row: dict) -> bool:
    """``row`` (a dict) is valid under ``schemas/rows/nemo_gym.schema.json``; kept equal to it by a test."""
    if "responses_create_params" in row and not _is_rcp(row["responses_create_params"]):
        return False
    extra = row.get("extra_env_info")
    if "extra_env_info" in row and (
        type(extra) is not dict
        or ("responses_create_params" in extra and not _is_rcp(extra["responses_create_params"]))
    ):
        return False
    if "agent_ref" in row:
        ref = row["agent_ref"]
        if type(ref) is not dict or not _is_text(ref.get("name")) or ("type" in ref and type(ref["type"]) is not str):
            return False
    if "messages" in row:
        messages = row["messages"]
        if type(messages) is not list or not messages or not all(_is_message(m) for m in messages):
            return False
    if "prompt" in row:
        prompt = row["prompt"]
        if not _is_text(prompt) and not (
            type(prompt) is list and prompt and all(type(p) is str or _is_message(p) for p in prompt)
        ):
            return False
    if any(key in row and not _is_text(row[key]) for key in _TEXT_FIELDS):
        return False
    if "tools" in row and not _is_object_list(row["tools"]):
        return False
    has_extra_rcp = type(extra) is dict and "responses_create_params" in extra
    return (
        "responses_create_params" in row
        or has_extra_rcp
        or any(key in row for key in ("messages", "prompt", *_TEXT_FIELDS))
    )


def _turn(item: str | dict) -> dict:
    """A chat turn from a text (a user turn), a ShareGPT turn or a role/content turn (kept as it is)."""
    if type(item) is str:
        return {"role": "user", "content": item}
    if type(item.get("role")) is str and type(item.get("content")) in (str, list):
        return item
    return {"role": _SHAREGPT_ROLES.get(item["from"], item["from"]), "content": item["value"]}


def responses_create_params(row: dict) -> dict:
    """The row's ``responses_create_params``, kept or synthesised (see the module docstring); ``row`` is valid."""
    if "responses_create_params" in row:
        return row["responses_create_params"]
    extra = row.get("extra_env_info")
    if type(extra) is dict and "responses_create_params" in extra:
        return extra["responses_create_params"]
    if "messages" in row:
        turns = [_turn(m) for m in row["messages"]]
    elif "prompt" in row:
        prompt = row["prompt"]
        turns = [_turn(prompt)] if type(prompt) is str else [_turn(p) for p in prompt]
    else:
        turns = [_turn(next(row[key] for key in _TEXT_FIELDS if key in row))]
    params: dict = {"input": turns}
    if "tools" in row:
        params["tools"] = row["tools"]
    return params


def _content_text(content: object) -> str:
    """Text of a turn's content: a string, or the ``text`` of each part of a Responses API part list, joined."""
    if type(content) is str:
        return content
    if type(content) is list:
        return "".join(part["text"] for part in content if type(part) is dict and type(part.get("text")) is str)
    return ""


def chat_turns(params: dict) -> list[dict]:
    """``[{role, content: str}]`` from ``responses_create_params.input``; items without a role are skipped."""
    given = params["input"]
    if type(given) is str:
        return [{"role": "user", "content": given}]
    return [
        {"role": item["role"], "content": _content_text(item.get("content"))}
        for item in given
        if type(item.get("role")) is str
    ]


def _lookup(row: dict, dotted: str) -> object:
    value: object = row
    for part in dotted.split("."):
        value = value.get(part) if type(value) is dict else None
    return value


class GymRows(RowFormat):
    """NeMo-Gym rows (schema ``nemo_gym``), normalised into the canonical row's ``gym`` field."""

    schema_name = "nemo_gym"
    description = "nemo_gym"

    def __init__(self, default_agent_ref: dict | None = None):
        self.default_agent_ref = default_agent_ref

    def _agent_ref(self, row: dict) -> dict | None:
        return row.get("agent_ref", self.default_agent_ref)

    def convert(self, row: object) -> dict | None:
        if type(row) is not dict or not _valid_by_schema(row):
            return None
        agent_ref = self._agent_ref(row)
        if agent_ref is None or self.missing_verifier_fields(row):
            return None
        gym = dict(row)
        gym["responses_create_params"] = responses_create_params(row)
        gym["agent_ref"] = agent_ref
        users = [turn["content"] for turn in chat_turns(gym["responses_create_params"]) if turn["role"] == "user"]
        return {"problem": users[-1] if users else "", "gym": gym}

    def missing_verifier_fields(self, row: object) -> list[str]:
        if not isinstance(row, dict):
            return []
        agent_ref = self._agent_ref(row)
        name = agent_ref.get("name") if isinstance(agent_ref, dict) else None
        fields = GYM_AGENT_VERIFIER_FIELDS.get(name, ()) if isinstance(name, str) else ()
        return [field for field in fields if _lookup(row, field) in (None, "", [], {})]

    def cross_field_problem(self, row: object) -> RowProblem | None:
        if isinstance(row, dict) and self._agent_ref(row) is None:
            return RowProblem("agent_ref", "missing; add agent_ref to the row or set data.default_agent_ref")
        return None

    def verifier_hint(self) -> str:
        return "the row's agent verifies with these fields; add them to the row"
