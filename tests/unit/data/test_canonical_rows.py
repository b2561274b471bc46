"""The canonical row encoding and reader: the fast encoder writes exactly what json.dumps writes with the
canonical options, and iter_rows rejects files that are not rl_prep output."""

from __future__ import annotations

import json

import pytest

from rlvr.data.rows import check_canonical_row, encode_row, iter_rows
from rlvr.errors import DataError

ROW = {
    "task_name": "code",
    "index": 3,
    "prompt": 'héllo "q"\n\u2028',
    "problem": "p",
    "source": "f:1",
    "prompt_tokens": None,
    "tests": {"kind": "python", "entry_point": None, "code": "assert 1.5 == 3/2\t", "z": [True, False, 0.1]},
}


def test_encode_row_equals_json_dumps_with_canonical_options():
    """Sorted keys at every depth, compact separators, UTF-8 text (no \\u escapes), same float/bool/null text."""
    expected = json.dumps(ROW, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert encode_row(ROW) == expected
    assert encode_row(ROW).startswith('{"index":3,"problem":"p","prompt":"héllo \\"q\\"\\n\u2028"')


def test_check_canonical_row_names_the_problem():
    """A row missing a common key, or with a verifier field of another task, is rejected by name."""
    check_canonical_row(ROW)
    with pytest.raises(ValueError, match="missing key\\(s\\) \\['index'\\]"):
        check_canonical_row({k: v for k, v in ROW.items() if k != "index"})
    with pytest.raises(ValueError, match="unexpected key\\(s\\) \\['ground_truth'\\]"):
        check_canonical_row({**ROW, "ground_truth": "1"})


def test_iter_rows_reads_back_and_rejects_foreign_files(tmp_path):
    """iter_rows yields the written rows and points at the line of a file not written by rl_prep."""
    path = tmp_path / "train.jsonl"
    path.write_text(encode_row(ROW) + "\n" + json.dumps({"problem": "x"}) + "\n", encoding="utf-8")
    rows = iter_rows(path)
    assert next(rows) == ROW
    with pytest.raises(DataError, match=f"{path}:2: not a canonical rl_prep row"):
        next(rows)
