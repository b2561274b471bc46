"""``nemotron rewards score``: score a file of responses against a file of rows, outside of training.

``--data ROWS.jsonl`` holds canonical rl_prep rows (``task_name`` + ``ground_truth`` or ``tests``) or raw rows of any
format rl_prep reads (``{"problem", "expected_answer"}``, ``messages``, ``{"problem", "tests"}``, other columns named
by ``--input-key`` / ``--output-key``), read by rl_prep's own code (:mod:`rlvr.data.score_rows`): the same
normalisation and the same ``file:line: field: problem`` errors. ``--responses RESPONSES.jsonl`` holds one
``{"response": str}`` per line, in row order. One JSON object per row is printed (or written to ``--output``):
``{"index", "task_name", "reward"}`` plus ``"error"`` and ``"detail"`` when the check failed. Blank lines are ignored
in both inputs.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from rlvr.data.score_rows import read_rows_for_scoring
from rlvr.errors import DataError, UserError
from rlvr.rewards.scorer import RewardScorer, default_scorer
from rlvr.utils.atomic import atomic_file


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; a line that is not a JSON object is a DataError."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    records = []
    with path.open("rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path}:{line_no}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column "
                    f"{exc.start + 1}); re-encode the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{line_no}: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(record, dict):
                raise DataError(f"{path}:{line_no}: expected a JSON object, got {type(record).__name__}")
            records.append((line_no, record))
    return records


def check_writable(path: Path) -> None:
    """``path`` can be written: its folder exists (or can be made) and takes a new file; else one clear error."""
    import tempfile

    if path.is_dir():
        raise UserError(f"--output {path} is a folder; give a file path (e.g. {path / 'scores.jsonl'})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.probe-"):
            pass
    except OSError as exc:
        raise UserError(f"--output {path} cannot be written ({exc.strerror}); choose a writable folder") from None


def load_rows(
    path: str | os.PathLike, *, env_name: str | None = None, input_key: str | None = None, output_key: str | None = None
) -> list[dict[str, Any]]:
    """Rows of ``path`` as the verifiers take them (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    return read_rows_for_scoring(str(path), env_name=env_name, input_key=input_key, output_key=output_key)


def load_responses(path: str | os.PathLike) -> list[str]:
    """The ``response`` string of every line of ``path``."""
    path = Path(path)
    responses = []
    for line_no, record in _read_jsonl(path):
        response = record.get("response")
        if not isinstance(response, str):
            raise DataError(
                f'{path}:{line_no}: expected {{"response": <string>}}, got keys {sorted(record)}'
                + ("" if response is None else f" with 'response' of type {type(response).__name__}")
            )
        responses.append(response)
    return responses


def score_files(
    data_path: str | os.PathLike,
    responses_path: str | os.PathLike,
    output_path: str | os.PathLike | None = None,
    *,
    scorer: RewardScorer | None = None,
    env_name: str | None = None,
    input_key: str | None = None,
    output_key: str | None = None,
) -> int:
    """Score ``responses_path`` against ``data_path``; write JSONL to ``output_path`` (or stdout); return 0.

    ``env_name`` / ``input_key`` / ``output_key`` say how raw rows are read, as ``data.*`` does for rl_prep.
    """
    if output_path is not None:
        check_writable(Path(output_path))  # before scoring: a bad --output must not cost the whole scoring run
    rows = load_rows(data_path, env_name=env_name, input_key=input_key, output_key=output_key)
    responses = load_responses(responses_path)
    if len(rows) != len(responses):
        raise UserError(
            f"{data_path} has {len(rows)} rows but {responses_path} has {len(responses)} responses; "
            'give exactly one {"response": ...} line per row, in row order'
        )
    result = (scorer or default_scorer()).score_batch([r["task_name"] for r in rows], responses, rows)
    lines = []
    for index, row in enumerate(rows):
        record: dict[str, Any] = {"index": index, "task_name": row["task_name"], "reward": result.rewards[index]}
        if result.per_row_error[index] is not None:
            record["error"] = result.per_row_error[index]
            record["detail"] = result.details[index]
        lines.append(json.dumps(record, ensure_ascii=False))
    if output_path is None:
        for line in lines:
            print(line)
    else:
        with atomic_file(output_path) as fh:
            fh.writelines(line + "\n" for line in lines)
    mean = sum(result.rewards) / len(rows) if rows else 0.0
    failures = {cause: n for cause, n in result.errors.items() if n}
    print(f"scored {len(rows)} responses: mean reward {mean:.4f}; failed checks {failures or 'none'}", file=sys.stderr)
    return 0
