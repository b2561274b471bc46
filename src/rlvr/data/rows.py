"""The canonical training row: the contract between ``rl_prep``, the GRPO trainer and the verifiers.

``rl_prep`` writes ``train.jsonl`` and ``val.jsonl`` with one canonical row per line: a JSON object with sorted keys,
compact separators and UTF-8 text (no ASCII escaping), so that the same input and config give the same bytes.

Keys of every row:

* ``index`` (int): position of the row in its file, ``0 .. N-1``.
* ``task_name`` (str): the dataset's ``env_name`` (``math``, ``code`` or ``nemo_gym``); routes the row to its
  verifier / environment, as NeMo-RL's ``task_name`` does.
* ``prompt`` (str): the text the policy is conditioned on. With a tokenizer it is the chat template applied (with
  ``add_generation_prompt=True``) to ``[system?, user]``, where ``user = prompt_file.format(problem)`` (or the
  problem itself without a prompt file) and the system turn is the row's own (``messages`` rows) or
  ``system_prompt_file``'s; without a tokenizer it is the user text alone; with a tokenizer that has no chat
  template (a base model) it is ``prompt_file``'s text, after the BOS text the tokenizer would add. For
  ``nemo_gym`` rows the template is applied to the chat turns of ``responses_create_params.input`` (tools are not
  rendered).
* ``problem`` (str): the raw question (math, code) or the last user text (nemo_gym), before templating.
* ``source`` (str): ``"<data_path as configured>:<line number>"`` of the input line, for tracing a row back.
* ``prompt_tokens`` (int or null): number of tokens of ``prompt`` (``add_special_tokens=False``); null when the step
  ran without a tokenizer.

The verifier field, by ``task_name``:

* ``math``: ``ground_truth`` (str), the reference answer (math-verify wraps it in ``\\boxed{}``).
* ``code``: ``tests`` (object), either ``{"kind": "stdio", "inputs": [str], "outputs": [str], "fn_name": str|null}``
  (stdin/stdout cases, or call-based cases when ``fn_name`` is set) or ``{"kind": "python", "code": str,
  "entry_point": str|null}`` (test code run after the candidate; with an entry point ``check(<entry_point>)`` is
  called, as in HumanEval). Optional keys are always present (null when absent from the input).
* ``nemo_gym``: ``gym`` (object), the normalised NeMo-Gym row: the input row with ``responses_create_params``
  (kept, or synthesised from the row's prompt fields) and ``agent_ref`` (kept, or ``data.default_agent_ref``); every
  server field (``question``, ``expected_answer``, ``verifier_metadata``, ...) is kept as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from rlvr.errors import DataError

#: env_name -> the key of the canonical row that carries what its verifier needs.
VERIFIER_KEY_BY_TASK: dict[str, str] = {"math": "ground_truth", "code": "tests", "nemo_gym": "gym"}

#: Keys every canonical row has, whatever its task.
COMMON_KEYS: frozenset[str] = frozenset({"index", "task_name", "prompt", "problem", "source", "prompt_tokens"})

# One encoder for every row: json.dumps with non-default options builds a new encoder per call, which costs more
# than the encoding of a short row. Where CPython's C encoder is available it is built once and called directly
# (JSONEncoder.encode builds it anew per call: a third of the time for a canonical row); the output is the same
# bytes, as tests/unit/data checks. Rows are trees, so the circular-reference check is off.
_ENCODER = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _make_fast_encoder():
    try:
        from json.encoder import c_make_encoder, encode_basestring

        c_encoder = c_make_encoder(None, _ENCODER.default, encode_basestring, None, ":", ",", True, False, True)
    except (ImportError, TypeError):
        return None
    return c_encoder


_C_ENCODER = _make_fast_encoder()


def encode_row(row: dict) -> str:
    """Serialise one row the canonical way (sorted keys, compact, UTF-8 text); no trailing newline."""
    if _C_ENCODER is not None:
        return "".join(_C_ENCODER(row, 0))
    return _ENCODER.encode(row)


def check_canonical_row(row: object) -> None:
    """Raise ``ValueError`` naming the first key that makes ``row`` not a canonical row of its task."""
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    missing = sorted(COMMON_KEYS - row.keys())
    if missing:
        raise ValueError(f"missing key(s) {missing}")
    task = row["task_name"]
    if task not in VERIFIER_KEY_BY_TASK:
        raise ValueError(f"task_name {task!r} is not one of {sorted(VERIFIER_KEY_BY_TASK)}")
    extra = sorted(row.keys() - COMMON_KEYS - {VERIFIER_KEY_BY_TASK[task]})
    if VERIFIER_KEY_BY_TASK[task] not in row:
        raise ValueError(f"a {task} row needs {VERIFIER_KEY_BY_TASK[task]!r}")
    if extra:
        raise ValueError(f"unexpected key(s) {extra} for task {task!r}")


def iter_rows(path: str | Path) -> Iterator[dict]:
    """Yield the canonical rows of a ``train.jsonl`` / ``val.jsonl`` written by ``rl_prep``, checking each one.

    For the consumers (trainer, evaluation): a file that is not canonical means it was not written by this
    version of ``rl_prep``, so the error says to re-run the step.
    """
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            try:
                row = json.loads(line)
                check_canonical_row(row)
            except ValueError as exc:
                raise DataError(
                    f"{path}:{lineno}: not a canonical rl_prep row ({exc}); re-run the data_prep/rl_prep step"
                ) from None
            yield row
