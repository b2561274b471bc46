"""prepare_rl_data end to end: canonical rows for every kind, key overrides, deterministic validation split,
duplicate counting, templating, bad-line reports, empty results, atomic output and byte-identical reruns."""

from __future__ import annotations

import json
import os

import pytest
from rl_prep_helpers import expected_tokens, read_jsonl, write_jsonl

from rlvr.data import prep as prep_module
from rlvr.data.prep import prepare_rl_data
from rlvr.data.rows import iter_rows
from rlvr.errors import DataError


def run(tmp_path, data, *, tokenizer=None, seed=0, out="out", **kw):
    card = prepare_rl_data(data, out_dir=tmp_path / out, tokenizer_dir=tokenizer, seed=seed, **kw)
    return card, read_jsonl(tmp_path / out / "train.jsonl"), read_jsonl(tmp_path / out / "val.jsonl")


def math_rows(n, start=0):
    return [{"problem": f"What is {i}+1?", "expected_answer": str(i + 1)} for i in range(start, start + n)]


def test_legacy_math_rows_are_written_canonically(tmp_path):
    """Two legacy rows give exactly these bytes: sorted keys, compact, index, source = file:line, null tokens."""
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [{"problem": "1+1?", "expected_answer": "2", "id": 1}, "", {"problem": "π?", "expected_answer": "3.14"}],
    )
    card, _, val = run(tmp_path, {"train": {"data_path": str(path)}})
    src = str(path)
    assert (tmp_path / "out" / "train.jsonl").read_text(encoding="utf-8") == (
        '{"ground_truth":"2","index":0,"problem":"1+1?","prompt":"1+1?","prompt_tokens":null,'
        f'"source":"{src}:1","task_name":"math"}}\n'
        '{"ground_truth":"3.14","index":1,"problem":"π?","prompt":"π?","prompt_tokens":null,'
        f'"source":"{src}:3","task_name":"math"}}\n'
    )
    assert val == [] and card["validation"]["source"] == "none"
    assert (card["rows_in"], card["rows_out"], card["sources"][0]["blank_lines"]) == (2, 2, 1)
    assert json.loads((tmp_path / "out" / "data_card.json").read_text()) == card


def test_messages_code_and_gym_rows_end_to_end(tmp_path):
    """Each env_name's rows become canonical rows with their verifier field; iter_rows reads them back."""
    msgs = write_jsonl(
        tmp_path / "m.jsonl",
        [{"messages": [{"role": "user", "content": "2*3?"}, {"role": "assistant", "content": "6"}]}],
    )
    code = write_jsonl(
        tmp_path / "c.jsonl", [{"problem": "echo", "tests": {"kind": "stdio", "inputs": ["a"], "outputs": ["a"]}}]
    )
    card, train, _ = run(tmp_path, {"train": [{"data_path": str(msgs)}, {"data_path": str(code), "env_name": "code"}]})
    assert [(r["task_name"], r["problem"], r.get("ground_truth")) for r in train] == [
        ("math", "2*3?", "6"),
        ("code", "echo", None),
    ]
    assert train[1]["tests"] == {"kind": "stdio", "inputs": ["a"], "outputs": ["a"], "fn_name": None}
    assert card["train"]["per_task"] == {"code": 1, "math": 1}
    assert [s["format"] for s in card["sources"]] == [
        "messages([system?, user, assistant])",
        "code(problem=problem, tests=tests)",
    ]

    gym = write_jsonl(tmp_path / "g.jsonl", [{"question": "1+2?", "expected_answer": "3"}])
    ref = {"type": "responses_api_agents", "name": "math_with_judge_simple_agent"}
    _, gym_train, _ = run(
        tmp_path, {"train": {"data_path": str(gym), "env_name": "nemo_gym"}, "default_agent_ref": ref}, out="gym"
    )
    [row] = list(iter_rows(tmp_path / "gym" / "train.jsonl"))
    assert row == gym_train[0]
    assert row["gym"] == {
        "question": "1+2?",
        "expected_answer": "3",
        "agent_ref": ref,
        "responses_create_params": {"input": [{"role": "user", "content": "1+2?"}]},
    }
    assert (row["task_name"], row["prompt"]) == ("nemo_gym", "1+2?")


def test_input_and_output_keys_name_other_columns(tmp_path):
    """ResponseDataset-style keys pick the problem and answer columns; other columns are ignored."""
    path = write_jsonl(tmp_path / "t.jsonl", [{"question": "q1", "answer": "a1", "problem": "ignored"}])
    _, train, _ = run(
        tmp_path,
        {
            "train": {
                "data_path": str(path),
                "dataset_name": "ResponseDataset",
                "input_key": "question",
                "output_key": "answer",
            }
        },
    )
    assert (train[0]["problem"], train[0]["ground_truth"]) == ("q1", "a1")


def test_validation_split_is_seeded_deterministic_and_ordered(tmp_path):
    """split_validation_size=0.25 of 20 rows moves ceil(5) rows chosen by the seed; both parts keep file order."""
    path = write_jsonl(tmp_path / "t.jsonl", math_rows(20))
    data = {"train": {"data_path": str(path), "split_validation_size": 0.25}, "validation": None}
    card, train, val = run(tmp_path, data, seed=1, out="a")
    _, train_again, val_again = run(tmp_path, data, seed=1, out="b")
    _, _, val_other = run(tmp_path, data, seed=2, out="c")
    assert (len(train), len(val)) == (15, 5) and (train, val) == (train_again, val_again)
    assert {r["source"] for r in val} != {r["source"] for r in val_other}
    lines = [int(r["source"].rsplit(":", 1)[1]) for r in val]
    assert lines == sorted(lines) and [r["index"] for r in val] == [0, 1, 2, 3, 4]
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in val}
    assert card["validation"]["source"] == "split" and card["sources"][0]["split_to_validation"] == 5
    seeded = {"train": {"data_path": str(path), "split_validation_size": 3, "seed": 1}}
    val_99, val_7 = run(tmp_path, seeded, seed=99, out="d")[2], run(tmp_path, seeded, seed=7, out="e")[2]
    assert len(val_99) == 3 and val_99 == val_7  # the entry's own seed wins over the step seed


def test_split_that_leaves_no_training_rows_is_an_error(tmp_path):
    """A row-count split as large as the data set is refused with the key named."""
    path = write_jsonl(tmp_path / "t.jsonl", math_rows(3))
    with pytest.raises(DataError, match="data.train.split_validation_size=3 takes 3 of the 3"):
        run(tmp_path, {"train": {"data_path": str(path), "split_validation_size": 3}})


def test_duplicates_are_dropped_counted_and_accounted(tmp_path):
    """Exact duplicate prompts keep their first occurrence; rows_in = rows_out + duplicates + rejects."""
    rows = math_rows(4) + math_rows(2) + [{"problem": "What is 0+1?", "expected_answer": "other"}]
    train_path = write_jsonl(tmp_path / "t.jsonl", rows)
    val_path = write_jsonl(tmp_path / "v.jsonl", math_rows(2, start=3) + math_rows(1, start=3))
    card, train, val = run(
        tmp_path, {"train": {"data_path": str(train_path)}, "validation": {"data_path": str(val_path)}}
    )
    assert [r["source"].rsplit(":", 1)[1] for r in train] == ["1", "2", "3", "4"]
    assert train[0]["ground_truth"] == "1"
    assert (card["train"]["duplicates"], card["validation"]["duplicates"], len(val)) == (3, 1, 2)
    assert card["validation"]["prompts_in_train"] == 1  # "What is 3+1?" is in both
    assert card["rows_in"] == card["rows_out"] + card["duplicates"] + card["rejects"] == 10


def test_templating_with_prompt_file_system_prompt_and_chat_template(tmp_path, char_tokenizer_dir):
    """prompt = chat_template([system, user=prompt_file.format(problem)]) + generation prompt; tokens counted;
    prompts of >= max_input_seq_length tokens are rejected and counted."""
    (tmp_path / "p.txt").write_text("Solve: {}")
    (tmp_path / "s.txt").write_text("Be brief.")
    path = write_jsonl(
        tmp_path / "t.jsonl",
        [{"problem": "1+1?", "expected_answer": "2"}, {"problem": "x" * 40, "expected_answer": "x"}],
    )
    data = {
        "train": {
            "data_path": str(path),
            "prompt_file": str(tmp_path / "p.txt"),
            "system_prompt_file": str(tmp_path / "s.txt"),
        }
    }
    card, train, _ = run(tmp_path, data, tokenizer=char_tokenizer_dir, max_input_seq_length=40)
    [row] = train
    assert row["prompt"] == "<|system|>Be brief.\n<|user|>Solve: 1+1?\n<|assistant|>"
    assert row["prompt_tokens"] == expected_tokens(row["prompt"]) == 25
    assert card["train"]["rejects"] == {"prompt_too_long": 1} and card["rejects"] == 1
    assert card["train"]["prompt_tokens"]["max"] == 25
    assert card["length_check"] == "prompts with >= max_input_seq_length tokens rejected"


def test_bad_lines_are_reported_together_with_file_line_and_field(tmp_path):
    """A non-JSON line, a schema failure and missing verifier fields, in two files, come in one DataError."""
    train = write_jsonl(
        tmp_path / "t.jsonl",
        [
            {"problem": "ok", "expected_answer": "1"},
            '{"problem": "x",',
            {"problem": 5, "expected_answer": "1"},
            {"problem": "no answer"},
        ],
    )
    val = write_jsonl(tmp_path / "v.jsonl", [{"problem": "p", "expected_answer": ""}])
    with pytest.raises(DataError) as info:
        run(tmp_path, {"train": {"data_path": str(train)}, "validation": {"data_path": str(val)}})
    message = str(info.value)
    assert info.value.code == "missing_verifier_fields"
    assert message.startswith("[missing_verifier_fields] 4 bad line(s)")
    assert f"{train}:2: (line): not valid JSON: Expecting" in message
    assert f"{train}:3: problem: expected string, got integer" in message
    assert f"{train}:4: expected_answer: missing_verifier_fields: no reference answer" in message
    assert f"{val}:1: expected_answer: missing_verifier_fields" in message
    assert not (tmp_path / "out").exists()


def test_only_the_first_ten_bad_lines_are_listed(tmp_path):
    """13 bad lines: ten listed, the rest counted, so the message stays readable."""
    path = write_jsonl(tmp_path / "t.jsonl", ["not json"] * 13)
    with pytest.raises(DataError, match="13 bad line") as info:
        run(tmp_path, {"train": {"data_path": str(path)}})
    assert "3 more not shown" in str(info.value)
    assert f"{path}:10:" in str(info.value) and f"{path}:11:" not in str(info.value)
    assert info.value.code is None


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_result_is_an_error(tmp_path, content):
    """A file with no rows gives no training rows: an error naming the entry and the file."""
    path = tmp_path / "t.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=f"no train rows left after preparation: data.train \\({path}\\): 0 row"):
        run(tmp_path, {"train": {"data_path": str(path)}})


def test_all_prompts_too_long_is_an_error_that_says_so(tmp_path, char_tokenizer_dir):
    """When the length limit rejects everything, the error says how many were too long."""
    path = write_jsonl(tmp_path / "t.jsonl", math_rows(2))
    with pytest.raises(DataError, match="2 prompt\\(s\\) rejected as too long"):
        run(tmp_path, {"train": {"data_path": str(path)}}, tokenizer=char_tokenizer_dir, max_input_seq_length=5)


def test_failure_leaves_previous_output_untouched_and_no_temporaries(tmp_path, monkeypatch):
    """An error while writing leaves the old out_dir exactly as it was and no temporary folders beside it."""
    path = write_jsonl(tmp_path / "t.jsonl", math_rows(3))
    run(tmp_path, {"train": {"data_path": str(path)}})
    before = {name: (tmp_path / "out" / name).read_bytes() for name in os.listdir(tmp_path / "out")}
    calls = []

    def failing_encode(row):
        calls.append(row)
        if len(calls) == 2:
            raise OSError("disk full")
        return json.dumps(row)

    monkeypatch.setattr(prep_module, "encode_row", failing_encode)
    write_jsonl(path, math_rows(5))
    with pytest.raises(OSError, match="disk full"):
        run(tmp_path, {"train": {"data_path": str(path)}})
    assert {name: (tmp_path / "out" / name).read_bytes() for name in os.listdir(tmp_path / "out")} == before
    assert sorted(os.listdir(tmp_path)) == ["out", "t.jsonl"]


def test_output_is_byte_identical_across_runs(tmp_path, char_tokenizer_dir):
    """Same input and config, two runs into two folders: the three files are byte for byte the same."""
    path = write_jsonl(tmp_path / "t.jsonl", math_rows(30) + math_rows(5))
    data = {"train": {"data_path": str(path), "split_validation_size": 0.2}}
    run(tmp_path, data, tokenizer=char_tokenizer_dir, seed=3, out="a")
    run(tmp_path, data, tokenizer=char_tokenizer_dir, seed=3, out="b")
    for name in prep_module.OUTPUT_FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_byte_order_mark_is_accepted_and_bad_utf8_is_reported(tmp_path):
    """A UTF-8 BOM on the first line is not an error (as json.loads); invalid UTF-8 names its line and byte."""
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"problem": "a", "expected_answer": "1"}\n')
    _, train, _ = run(tmp_path, {"train": {"data_path": str(path)}})
    assert train[0]["problem"] == "a"
    path.write_bytes(b'{"problem": "a", "expected_answer": "1"}\n{"problem": "\xff", "expected_answer": "1"}\n')
    with pytest.raises(DataError, match=f"{path}:2: \\(line\\): not UTF-8 text \\(invalid start byte at byte 13\\)"):
        run(tmp_path, {"train": {"data_path": str(path)}}, out="o2")
