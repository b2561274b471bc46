"""Row formats: valid rows map to the canonical task fields, bad rows are diagnosed, and the fast checks agree
with the JSON Schemas in schemas/rows/ on hand-picked and on systematically mutated rows."""

from __future__ import annotations

import copy
import json

import pytest

from rlvr.data.formats import CodeTests, MathColumns, MathMessages, choose_format
from rlvr.data.gym import GymRows
from rlvr.data.row_schemas import (
    MISSING_VERIFIER_FIELDS,
    ROW_SCHEMA_NAMES,
    load_row_schema,
    row_schemas_dir,
    schema_errors,
)
from rlvr.errors import ConfigError

MATH_ROW = {"problem": "What is 2+3?", "expected_answer": "5", "id": 7}
MESSAGES_ROW = {"messages": [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "5"}]}
SYSTEM_MESSAGES_ROW = {"messages": [{"role": "system", "content": "Answer with a number."}, *MESSAGES_ROW["messages"]]}
STDIO_ROW = {
    "problem": "Print a+b.",
    "tests": {"kind": "stdio", "inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"], "fn_name": None},
}
CALL_ROW = {
    "problem": "Write add(a, b).",
    "tests": {"kind": "stdio", "inputs": ["[1, 2]"], "outputs": ["3"], "fn_name": "add"},
}
PYTHON_ROW = {
    "problem": "Write add(a, b).",
    "tests": {"kind": "python", "code": "def check(f):\n    assert f(1, 2) == 3\n", "entry_point": "add"},
}
GYM_ROW = {
    "responses_create_params": {
        "input": [{"role": "system", "content": "Be exact."}, {"role": "user", "content": "2+3?"}],
        "tools": [{"type": "function"}],
    },
    "agent_ref": {"type": "responses_api_agents", "name": "math_with_judge_simple_agent"},
    "question": "2+3?",
    "expected_answer": "5",
}
GYM_DEFAULT_REF = {"type": "responses_api_agents", "name": "some_agent"}


def test_schemas_are_valid_draft_2020_12_and_found_from_the_package():
    """Every row schema loads from <repo>/schemas/rows and is itself a valid draft 2020-12 schema."""
    import jsonschema

    assert (row_schemas_dir() / "code.schema.json").is_file()
    for name in ROW_SCHEMA_NAMES:
        schema = load_row_schema(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)


def test_unknown_schema_name_lists_known_ones():
    """An unknown schema name fails with the list of known names."""
    with pytest.raises(ConfigError, match="known: math_legacy, math_messages, code, nemo_gym"):
        load_row_schema("maths")


def test_valid_rows_convert_to_canonical_task_fields():
    """Each row kind maps to problem + its verifier field; optional test keys are filled with null."""
    assert MathColumns().convert(MATH_ROW) == {"problem": "What is 2+3?", "ground_truth": "5"}
    assert MathMessages().convert(MESSAGES_ROW) == {"problem": "What is 2+3?", "ground_truth": "5"}
    assert CodeTests().convert(STDIO_ROW) == {"problem": "Print a+b.", "tests": STDIO_ROW["tests"]}
    assert CodeTests().convert(CALL_ROW)["tests"]["fn_name"] == "add"
    no_fn = {"problem": "p", "tests": {"kind": "stdio", "inputs": ["1"], "outputs": ["1"]}}
    assert CodeTests().convert(no_fn)["tests"] == {"kind": "stdio", "inputs": ["1"], "outputs": ["1"], "fn_name": None}
    no_entry = {"problem": "p", "tests": {"kind": "python", "code": "assert True"}}
    assert CodeTests().convert(no_entry)["tests"] == {"kind": "python", "code": "assert True", "entry_point": None}
    assert CodeTests().convert(PYTHON_ROW)["tests"]["entry_point"] == "add"


def test_renamed_columns_follow_input_and_output_keys():
    """input_key / output_key name the columns; the renamed schema accepts what the fast path accepts."""
    fmt = MathColumns("question", "answer")
    row = {"question": "1+1?", "answer": "2"}
    assert fmt.convert(row) == {"problem": "1+1?", "ground_truth": "2"}
    assert fmt.convert(MATH_ROW) is None
    assert schema_errors("math_legacy", row, fmt.renames) == []
    [problem] = [p for p in fmt.diagnose({"question": "1+1?"})]
    assert (problem.field, problem.code) == ("answer", MISSING_VERIFIER_FIELDS)


@pytest.mark.parametrize(
    ("fmt", "row", "field", "code"),
    [
        (MathColumns(), {"problem": "p"}, "expected_answer", MISSING_VERIFIER_FIELDS),
        (MathColumns(), {"problem": "p", "expected_answer": ""}, "expected_answer", MISSING_VERIFIER_FIELDS),
        (MathColumns(), {"problem": "p", "expected_answer": True}, "expected_answer", None),
        (MathColumns(), {"problem": "p", "expected_answer": float("nan")}, "expected_answer", None),
        (
            MathMessages(),
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "p"}]},
            "messages[2].content",
            MISSING_VERIFIER_FIELDS,
        ),
        (
            MathMessages(),
            {
                "messages": [
                    {"role": "user", "content": "p"},
                    {"role": "assistant", "content": "5"},
                    {"role": "user", "content": "again"},
                ]
            },
            "messages",
            None,
        ),
        (MathColumns(), {"expected_answer": "5"}, "problem", None),
        (MathColumns(), ["p", "5"], "(row)", None),
        (
            MathMessages(),
            {"messages": [{"role": "user", "content": "p"}]},
            "messages[1].content",
            MISSING_VERIFIER_FIELDS,
        ),
        (
            MathMessages(),
            {"messages": [{"role": "user", "content": "p"}, {"role": "bot", "content": "5"}]},
            "messages[1].role",
            None,
        ),
        (CodeTests(), {"problem": "p"}, "tests", MISSING_VERIFIER_FIELDS),
        (
            CodeTests(),
            {"problem": "p", "tests": {"kind": "stdio", "inputs": [], "outputs": []}},
            "tests.inputs",
            MISSING_VERIFIER_FIELDS,
        ),
        (CodeTests(), {"problem": "p", "tests": {"kind": "python", "code": ""}}, "tests.code", MISSING_VERIFIER_FIELDS),
        (
            CodeTests(),
            {"problem": "p", "tests": {"kind": "stdio", "inputs": ["1", 2], "outputs": ["1", "2"]}},
            "tests.inputs[1]",
            None,
        ),
        (
            CodeTests(),
            {"problem": "p", "tests": {"kind": "stdio", "inputs": ["1", "2"], "outputs": ["1"]}},
            "tests.outputs",
            None,
        ),
        (CodeTests(), {"problem": "p", "tests": {"kind": "java", "code": "x"}}, "tests.kind", None),
        (CodeTests(), {"problem": "p", "tests": {"kind": "python", "code": "x", "timeout": 3}}, "tests", None),
    ],
)
def test_diagnose_names_the_field_and_the_code(fmt, row, field, code):
    """A rejected row is explained by its first problem: the field path and, for a verifier gap, the code."""
    assert fmt.convert(row) is None
    first = fmt.diagnose(row)[0]
    assert (first.field, first.code) == (field, code)


def test_missing_verifier_and_another_problem_are_both_reported():
    """A row lacking its answer and with a non-string problem gets two problems, the verifier one first."""
    problems = MathColumns().diagnose({"problem": 3})
    assert [(p.field, p.code) for p in problems] == [("expected_answer", MISSING_VERIFIER_FIELDS), ("problem", None)]
    assert problems[1].message == "expected string, got integer"


def test_choose_format_follows_config_not_rows():
    """math: a messages file is read as messages unless the legacy processor is named; keys default per NeMo-RL."""
    kw = {"processor": None, "dataset_name": None, "input_key": None, "output_key": None}
    assert isinstance(choose_format("math", first_row=MESSAGES_ROW, **kw), MathMessages)
    legacy = choose_format("math", first_row=MESSAGES_ROW, **{**kw, "processor": "math_data_processor"})
    assert (legacy.problem_key, legacy.answer_key) == ("problem", "expected_answer")
    response = choose_format("math", first_row=MATH_ROW, **{**kw, "dataset_name": "ResponseDataset"})
    assert (response.problem_key, response.answer_key) == ("input", "output")
    assert isinstance(choose_format("code", first_row=MATH_ROW, **kw), CodeTests)
    assert isinstance(choose_format("nemo_gym", first_row=None, **kw), GymRows)


# ---------------------------------------------------------------------------------------------------------------
# Agreement between the hand-written fast paths and jsonschema.

_ODD_VALUES = (None, 0, 1.5, True, "", "x", [], ["x"], [{"role": "user", "content": "x"}], {}, {"k": "v"})


def _mutations(row: object):
    """Variants of ``row``: every key removed, every value replaced by odd values, every list grown/emptied."""
    yield row
    paths = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                paths.append((path, key))
                walk(value, (*path, key))
        elif isinstance(node, list):
            paths.append((path, None))
            for i, value in enumerate(node):
                paths.append((path, i))
                walk(value, (*path, i))

    walk(row, ())
    for path, key in paths:
        yield from _edits(row, path, key)


def _edits(row, path, key):
    def at(copy_):
        node = copy_
        for part in path:
            node = node[part]
        return node

    if key is None:  # a list: empty it, append each odd value
        for value in ((), *((v,) for v in _ODD_VALUES)):
            variant = copy.deepcopy(row)
            node = at(variant)
            if value == ():
                node.clear()
            else:
                node.append(copy.deepcopy(value[0]))
            yield variant
        return
    if isinstance(at(row), dict):
        variant = copy.deepcopy(row)
        del at(variant)[key]
        yield variant
    for value in _ODD_VALUES:
        variant = copy.deepcopy(row)
        at(variant)[key] = copy.deepcopy(value)
        yield variant


def _agreement_cases(fmt, seeds):
    rows = [variant for seed in seeds for variant in _mutations(seed)]
    rows += [None, 3, "text", [], {}]
    return rows


@pytest.mark.parametrize(
    ("fmt", "seeds"),
    [
        (MathColumns(), [MATH_ROW, {"problem": "What is 10/4?", "expected_answer": 2.5}]),
        (MathColumns("question", "answer"), [{"question": "q", "answer": "a"}]),
        (MathMessages(), [MESSAGES_ROW, SYSTEM_MESSAGES_ROW]),
        (CodeTests(), [STDIO_ROW, CALL_ROW, PYTHON_ROW]),
        (
            GymRows(GYM_DEFAULT_REF),
            [
                GYM_ROW,
                {"responses_create_params": {"input": "2+3?"}},
                {"extra_env_info": {"responses_create_params": {"input": [{"role": "user", "content": "x"}]}}},
                {"messages": [{"from": "human", "value": "2+3?"}, {"role": "assistant", "content": [{"text": "5"}]}]},
                {"prompt": ["first", {"role": "user", "content": "second"}], "tools": [{"name": "calc"}]},
                {"prompt": "2+3?", "question": "2+3?", "problem": "p", "input": "i"},
            ],
        ),
    ],
    ids=["math_legacy", "math_renamed", "math_messages", "code", "nemo_gym"],
)
def test_fast_path_agrees_with_jsonschema(fmt, seeds):
    """convert() accepts a row iff jsonschema accepts it and the format's cross-field rule holds.

    The rows are the valid seeds plus every single edit of them (key removed, value replaced by null / numbers /
    booleans / empty or non-empty strings, lists and objects, lists emptied or grown): dozens to hundreds per format.
    """
    rows = _agreement_cases(fmt, seeds)
    assert len(rows) > 20
    accepted = 0
    for row in rows:
        schema_ok = not schema_errors(fmt.schema_name, row, fmt.renames)
        rule_ok = fmt.cross_field_problem(row) is None and not fmt.missing_verifier_fields(row)
        fast_ok = fmt.convert(row) is not None
        assert fast_ok == (schema_ok and rule_ok), json.dumps(row)
        accepted += fast_ok
        if not fast_ok:
            assert fmt.diagnose(row)  # never the internal-inconsistency AssertionError
    assert 0 < accepted < len(rows)


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        (5, "5"),
        (-12, "-12"),
        (5.0, "5"),
        (2.50, "2.5"),
        (1e3, "1000"),
        (1e-7, "0.0000001"),
        (-0.0, "0"),
        (0.1, "0.1"),
        (123456789012345678901234567890, "123456789012345678901234567890"),
        (1.5e20, "150000000000000000000"),
    ],
)
def test_numeric_answers_are_kept_as_their_plain_decimal_string(answer, text):
    """NeMo-RL data often stores numbers as answers: they become the string a person writes, never 1e+03."""
    assert MathColumns().convert({"problem": "p", "expected_answer": answer}) == {"problem": "p", "ground_truth": text}
    assert MathColumns("question", "answer").convert({"question": "p", "answer": answer})["ground_truth"] == text


def test_non_finite_numeric_answers_are_refused_with_the_field():
    """Python's json reads NaN / Infinity; they cannot be checked, so the row is diagnosed, not kept."""
    for value in (float("nan"), float("inf"), float("-inf")):
        problems = MathColumns().diagnose({"problem": "p", "expected_answer": value})
        assert [p.field for p in problems] == ["expected_answer"]
        assert "finite number" in problems[0].message


def test_a_leading_system_turn_becomes_the_rows_system_prompt():
    """[system, user, assistant] is accepted; the system text is carried for templating, the rest as usual."""
    assert MathMessages().convert(SYSTEM_MESSAGES_ROW) == {
        "problem": "What is 2+3?",
        "ground_truth": "5",
        "system_prompt": "Answer with a number.",
    }
    assert MathMessages().convert(MESSAGES_ROW) == {"problem": "What is 2+3?", "ground_truth": "5"}
    assert schema_errors("math_messages", SYSTEM_MESSAGES_ROW) == []
    # A system turn that is not first is still an error, named at its position.
    swapped = {
        "messages": [MESSAGES_ROW["messages"][0], {"role": "system", "content": "x"}, MESSAGES_ROW["messages"][1]]
    }
    assert MathMessages().convert(swapped) is None
    assert MathMessages().diagnose(swapped)[0].field == "messages"
