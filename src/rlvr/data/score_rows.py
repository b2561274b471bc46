"""Rows to score outside of training (``nemotron rewards score --data``): rl_prep's formats, no config needed.

A file may hold canonical rl_prep rows (``task_name`` + ``ground_truth`` / ``tests``; the other canonical keys are
optional here), raw rows of any format rl_prep reads, or both. Raw rows go through exactly rl_prep's code: the
same :class:`~rlvr.data.formats.RowFormat` (so the same normalisation: numeric answers as strings, a system turn
dropped, code tests with their optional keys) and the same ``file:line: field: problem`` errors, all bad lines
reported together.

Which raw format: ``env_name`` / ``input_key`` / ``output_key`` when given (as in ``data.*``), else from the
first raw row, once per file as rl_prep does: a row holding ``tests`` (or ``output_key``) as an object is code,
a ``messages`` row is math messages, anything else math columns. NeMo-Gym rows are scored by their resource
servers, not here.
"""

from __future__ import annotations

from rlvr.data.formats import RowFormat, choose_format, numeric_answer_text
from rlvr.data.reader import ProblemLog, read_dataset
from rlvr.data.row_schemas import RowProblem
from rlvr.data.rows import VERIFIER_KEY_BY_TASK
from rlvr.errors import DataError

SCORABLE_TASKS = ("math", "code")
_GYM_KEYS = ("responses_create_params", "agent_ref", "extra_env_info")


class ScoringRows(RowFormat):
    """Canonical rows as they are (checked), raw rows through the rl_prep format chosen for the file."""

    def __init__(self, env_name: str | None = None, input_key: str | None = None, output_key: str | None = None):
        if env_name not in (None, *SCORABLE_TASKS):
            raise DataError(
                f"--env-name {env_name!r}: rows of that kind cannot be scored here; known: {', '.join(SCORABLE_TASKS)}"
            )
        self.env_name, self.input_key, self.output_key = env_name, input_key, output_key
        self.raw: RowFormat | None = None
        self.raw_env: str | None = None

    # ProblemLog names the format of a file with bad lines: the raw one once chosen.
    @property
    def description(self) -> str:  # type: ignore[override]
        return self.raw.description if self.raw is not None else "canonical rl_prep rows"

    @property
    def schema_name(self) -> str:  # type: ignore[override]
        return self.raw.schema_name if self.raw is not None else ""

    def _raw_format(self, row: object) -> RowFormat:
        if self.raw is None:
            env = self.env_name
            if env is None:
                tests = row.get(self.output_key or "tests") if isinstance(row, dict) else None
                env = "code" if isinstance(tests, dict) else "math"
            self.raw_env = env
            self.raw = choose_format(
                env,
                processor=None,
                dataset_name=None,
                input_key=self.input_key,
                output_key=self.output_key,
                first_row=row,
            )
        return self.raw

    def convert(self, row: object) -> dict | None:
        if type(row) is dict and "task_name" in row:
            return row if _canonical_problem(row) is None else None
        if type(row) is dict and any(key in row for key in _GYM_KEYS):
            return None
        item = self._raw_format(row).convert(row)
        if item is not None:
            item.pop("system_prompt", None)  # only the prompt uses it; the verifier does not
            item["task_name"] = self.raw_env
        return item

    def diagnose(self, row: object) -> list[RowProblem]:
        if isinstance(row, dict) and "task_name" in row:
            return [_canonical_problem(row)]  # type: ignore[list-item]  # convert() rejected it: not None
        if isinstance(row, dict) and any(key in row for key in _GYM_KEYS):
            return [
                RowProblem(
                    next(key for key in _GYM_KEYS if key in row),
                    "NeMo-Gym rows are scored by their resource servers (env.nemo_gym), not by "
                    "rewards score; give math or code rows",
                )
            ]
        return self._raw_format(row).diagnose(row)


def _canonical_problem(row: dict) -> RowProblem | None:
    """What makes a row with ``task_name`` unscorable (None when it is fine); a numeric answer is normalised."""
    task = row["task_name"]
    if task not in SCORABLE_TASKS:
        return RowProblem("task_name", f"must be one of {list(SCORABLE_TASKS)} to be scored here, got {task!r}")
    key = VERIFIER_KEY_BY_TASK[task]
    value = row.get(key)
    if task == "math" and (type(value) is int or type(value) is float):
        text = numeric_answer_text(value)
        if text is not None:
            row[key] = text
            return None
    wanted = str if task == "math" else dict
    if type(value) is not wanted:
        what = "a string (the reference answer)" if task == "math" else "an object (the unit tests)"
        return RowProblem(
            key, f"a {task} row needs {key!r} as {what}, got {'nothing' if value is None else type(value).__name__}"
        )
    return None


def read_rows_for_scoring(
    path: str, *, env_name: str | None = None, input_key: str | None = None, output_key: str | None = None
) -> list[dict]:
    """Every row of ``path`` as a row the verifiers take (``task_name`` + verifier field + ``source``)."""
    log = ProblemLog(
        subject="the rows to score",
        retry="score again",
        chosen_by="--env-name / --input-key / --output-key, else the first row",
    )
    data = read_dataset(str(path), ScoringRows(env_name, input_key, output_key), log)
    log.raise_if_any()
    return data.rows
