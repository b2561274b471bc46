"""Tests of rlvr.tiny.arith: deterministic, disjoint, correct arithmetic problems in math JSONL."""

from __future__ import annotations

import json
import re

import pytest

from rlvr.errors import ConfigError
from rlvr.tiny.arith import (
    count_problem_space,
    generate_problems,
    generate_splits,
    get_operation,
    misread_operators,
    slip_digits,
    write_tiny_datasets,
)
from rlvr.tiny.config import TinyConfig

PROBLEM = re.compile(r"^(\d+)([+\-*])(\d+)$")

SMALL = {
    "data": {
        "sft": {
            "operations": ["add", "sub", "mul"],
            "min_digits": 1,
            "max_digits": 2,
            "train_size": 600,
            "val_size": 40,
        },
        "rl": {"operations": ["add", "sub"], "min_digits": 2, "max_digits": 2, "train_size": 300, "val_size": 30},
    }
}


def _expected(problem: str) -> int:
    """Independent evaluation of a problem text (regex parse, then the Python operator)."""
    a, op, b = PROBLEM.match(problem).groups()
    return {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]


def test_same_seed_same_rows_other_seed_other_rows():
    """Generation is a pure function of its arguments; another seed gives another list."""
    kwargs = {"operations": ["add", "sub"], "min_digits": 1, "max_digits": 2}
    first = generate_problems(50, seed="s:1", **kwargs)
    assert first == generate_problems(50, seed="s:1", **kwargs)
    assert first != generate_problems(50, seed="s:2", **kwargs)


def test_answers_are_exact_integers_and_difficulty_is_respected():
    """Each answer is the exact integer result (negative for a-b<0); operands have min..max digits; only chosen ops."""
    rows = generate_problems(400, operations=["sub", "mul"], min_digits=2, max_digits=3, seed=3)
    assert len({r["problem"] for r in rows}) == 400
    for row in rows:
        a, op, b = PROBLEM.match(row["problem"]).groups()
        assert op in "-*"
        assert 2 <= len(a) <= 3 and 2 <= len(b) <= 3
        assert not a.startswith("0") and not b.startswith("0")
        assert row["expected_answer"] == str(_expected(row["problem"]))
    assert any(r["expected_answer"].startswith("-") for r in rows)
    assert {len(PROBLEM.match(r["problem"]).group(1)) for r in rows} == {2, 3}


def test_hand_counted_problem_space():
    """1-digit operands are 0..9 (10 values), 2-digit 10..99 (90): add+sub over 1..2 digits = 2 * 100**2."""
    assert count_problem_space(["add"], 1, 1) == 100
    assert count_problem_space(["add"], 2, 2) == 8100
    assert count_problem_space(["add", "sub"], 1, 2) == 20000


def test_exhausting_a_small_space_and_then_overdrawing():
    """All 100 one-digit additions can be drawn; one more (or one already excluded) is a ConfigError naming the key."""
    rows = generate_problems(100, operations=["add"], min_digits=1, max_digits=1, seed=0)
    assert {r["problem"] for r in rows} == {f"{a}+{b}" for a in range(10) for b in range(10)}
    with pytest.raises(ConfigError, match="tiny.data.x"):
        generate_problems(101, operations=["add"], min_digits=1, max_digits=1, seed=0, where="tiny.data.x")
    with pytest.raises(ConfigError, match="99 of the 100"):
        generate_problems(100, operations=["add"], min_digits=1, max_digits=1, seed=0, exclude=frozenset({"3+4"}))


def test_unknown_operation_lists_known_ones():
    """The operation registry fails with the known names."""
    with pytest.raises(ConfigError, match="add, mul, sub"):
        get_operation("div")


def test_splits_are_disjoint_and_sized():
    """No problem text is in two splits; each split has its configured size; RL rows follow the RL difficulty."""
    cfg = TinyConfig.from_dict(SMALL)
    splits = generate_splits(cfg)
    sizes = {"sft_train": 600, "sft_val": 40, "rl_train": 300, "rl_val": 30}
    assert {k: len(v) for k, v in splits.items()} == sizes
    texts = [r["problem"] for rows in splits.values() for r in rows]
    assert len(texts) == len(set(texts)) == sum(sizes.values())
    for r in splits["rl_train"] + splits["rl_val"]:
        a, op, b = PROBLEM.match(r["problem"]).groups()
        assert op in "+-" and len(a) == len(b) == 2


def test_validation_sets_do_not_depend_on_training_sizes():
    """Held-out sets are claimed first, so growing a training set leaves rl_val and sft_val unchanged."""
    small = generate_splits(TinyConfig.from_dict(SMALL))
    bigger = json.loads(json.dumps(SMALL))
    bigger["data"]["sft"]["train_size"] = 900
    big = generate_splits(TinyConfig.from_dict(bigger))
    assert small["rl_val"] == big["rl_val"] and small["sft_val"] == big["sft_val"]


def test_write_tiny_datasets_writes_math_jsonl(tmp_path):
    """Four JSONL files of {problem, expected_answer} string rows, identical on a second write."""
    cfg = TinyConfig.from_dict(SMALL)
    paths = write_tiny_datasets(tmp_path / "data", cfg)
    assert set(paths) == {"sft_train", "sft_val", "rl_train", "rl_val"}
    contents = {}
    for name, path in paths.items():
        assert path == tmp_path / "data" / f"{name}.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(line) for line in lines]
        assert all(set(r) == {"problem", "expected_answer"} for r in rows)
        assert all(isinstance(r["problem"], str) and isinstance(r["expected_answer"], str) for r in rows)
        contents[name] = path.read_bytes()
    write_tiny_datasets(tmp_path / "data", cfg)
    assert {n: p.read_bytes() for n, p in paths.items()} == contents
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(f"{n}.jsonl" for n in paths)


def _noisy_teacher_rows(key: str, rate: float) -> list[tuple[dict, dict]]:
    """(noisy, true) sft_train row pairs of ``tiny.data.<key>=rate``, after checking what every noisy teacher
    keeps: the choice is seeded, the problems and the other splits are those of the clean run."""
    clean = generate_splits(TinyConfig.from_dict({}))
    noisy = generate_splits(TinyConfig.from_dict({"data": {key: rate}}))
    assert noisy == generate_splits(TinyConfig.from_dict({"data": {key: rate}}))
    for name in ("rl_train", "rl_val", "sft_val"):
        assert noisy[name] == clean[name]
    assert [r["problem"] for r in noisy["sft_train"]] == [r["problem"] for r in clean["sft_train"]]
    return list(zip(noisy["sft_train"], clean["sft_train"]))


def test_sloppy_teacher_misreads_only_sft_train_answers():
    """tiny.data.sft_wrong_operator_rate: that fraction of sft_train answers is the other operator's result."""
    pairs = _noisy_teacher_rows("sft_wrong_operator_rate", 0.5)
    changed = 0
    for row, truth in pairs:
        if row["expected_answer"] != truth["expected_answer"]:
            changed += 1
            a, sym, b = re.fullmatch(r"(\d+)([+\-*])(\d+)", row["problem"]).groups()
            assert int(row["expected_answer"]) == (int(a) - int(b) if sym == "+" else int(a) + int(b))
    # 0.5 of 8000 rows, minus the few where both operators agree (b = 0); binomial std is about 45 rows
    assert 3700 < changed < 4200
    truths = [truth for _, truth in pairs]
    assert misread_operators(truths, 0.0, seed=1) == truths


def test_wrong_operator_rate_must_stay_below_one():
    with pytest.raises(ConfigError, match="sft_wrong_operator_rate"):
        TinyConfig.from_dict({"data": {"sft_wrong_operator_rate": 1.0}})


def test_careless_teacher_slips_exactly_one_digit_of_sft_train_answers():
    """tiny.data.sft_digit_slip_rate: that fraction of sft_train answers differs from the truth in exactly one
    digit, keeps its sign and length and never gains a leading zero."""
    pairs = _noisy_teacher_rows("sft_digit_slip_rate", 0.4)
    changed = 0
    for row, truth in pairs:
        got, want = row["expected_answer"], truth["expected_answer"]
        assert want == str(_expected(truth["problem"]))
        if got == want:
            continue
        changed += 1
        assert len(got) == len(want) and got.startswith("-") == want.startswith("-")
        assert sum(a != b for a, b in zip(got, want)) == 1
        assert got == str(int(got))  # canonical: no leading zero, so it can never verify as the true answer
    assert 3050 < changed < 3350  # 0.4 of 8000, binomial std about 44 rows
    truths = [truth for _, truth in pairs]
    assert slip_digits(truths, 0.0, seed=1) == truths


def test_slip_of_a_one_digit_answer_may_become_zero():
    rows = [{"problem": "5-5", "expected_answer": "0"}, {"problem": "2+3", "expected_answer": "5"}] * 200
    slipped = {r["expected_answer"] for r in slip_digits(rows, 0.99, seed=3)}
    assert slipped == set("0123456789")


def test_digit_slip_rate_must_stay_below_one():
    with pytest.raises(ConfigError, match="sft_digit_slip_rate"):
        TinyConfig.from_dict({"data": {"sft_digit_slip_rate": 1.0}})
