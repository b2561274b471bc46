"""JSON Schemas (draft 2020-12) of the training rows, and one-line messages for rows that fail them.

The schemas live in ``<repo>/schemas/rows/<name>.schema.json`` (``math_legacy``, ``math_messages``, ``code``,
``nemo_gym``), found through :mod:`rlvr.paths` like every other declarative file (``RLVR_HOME`` overrides the
repository root for a non-editable install).

jsonschema is too slow to run on every row of a million-row file, so :mod:`rlvr.data.formats` checks rows with
hand-written code equal to these schemas (a test proves they agree) and calls :func:`describe_schema_error` only
for a row that failed, to say which field is wrong and why.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import jsonschema

from rlvr.errors import ConfigError
from rlvr.paths import SCHEMA_DIR

ROW_SCHEMA_NAMES: tuple[str, ...] = ("math_legacy", "math_messages", "code", "nemo_gym")

MISSING_VERIFIER_FIELDS = "missing_verifier_fields"


@dataclass(frozen=True)
class RowProblem:
    """What is wrong with one row: the field (dotted path, ``[i]`` for list items), the problem, an error code."""

    field: str
    message: str
    code: str | None = None


def row_schemas_dir() -> Path:
    """The folder holding the row schemas (see the module docstring for how it is found)."""
    return SCHEMA_DIR / "rows"


@functools.cache
def load_row_schema(name: str) -> dict:
    """Load ``schemas/rows/<name>.schema.json``; unknown names fail with the list of known ones."""
    if name not in ROW_SCHEMA_NAMES:
        raise ConfigError(f"unknown row schema {name!r}; known: {', '.join(ROW_SCHEMA_NAMES)}")
    path = row_schemas_dir() / f"{name}.schema.json"
    if not path.is_file():
        raise ConfigError(
            f"row schema {path} not found; run from a checkout or an editable install of rlvr, "
            "or set RLVR_HOME to the repository's root"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def renamed_schema(name: str, renames: tuple[tuple[str, str], ...] = ()) -> dict:
    """The schema ``name`` with top-level properties renamed (``input_key`` / ``output_key`` name other columns)."""
    schema = load_row_schema(name)
    if not renames:
        return schema
    schema = copy.deepcopy(schema)
    mapping = dict(renames)
    schema["properties"] = {mapping.get(key, key): value for key, value in schema["properties"].items()}
    schema["required"] = [mapping.get(key, key) for key in schema["required"]]
    return schema


@functools.lru_cache(maxsize=32)
def _validator(name: str, renames: tuple[tuple[str, str], ...]) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(renamed_schema(name, renames))


def schema_errors(name: str, row: object, renames: tuple[tuple[str, str], ...] = ()) -> list:
    """All jsonschema errors of ``row`` against schema ``name`` (empty when the row is valid)."""
    return list(_validator(name, renames).iter_errors(row))


def format_path(parts: Iterable) -> str:
    """``deque(['tests', 'inputs', 2])`` -> ``tests.inputs[2]``; the empty path is ``(row)``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(row)"


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _describe(error: jsonschema.ValidationError) -> RowProblem:
    """One short message per validator kind; jsonschema's own text repeats the (possibly huge) instance."""
    path = list(error.absolute_path)
    kind, expected, instance = error.validator, error.validator_value, error.instance
    if kind == "required":
        missing = [key for key in expected if isinstance(instance, dict) and key not in instance]
        return RowProblem(format_path([*path, missing[0] if missing else "?"]), "missing (required)")
    if kind == "type":
        wanted = expected if isinstance(expected, str) else " or ".join(expected)
        return RowProblem(format_path(path), f"expected {wanted}, got {_json_type(instance)}")
    if kind == "minLength":
        return RowProblem(format_path(path), "must not be empty")
    if kind == "minItems":
        return RowProblem(format_path(path), f"needs at least {expected} item(s), got {len(instance)}")
    if kind == "maxItems":
        return RowProblem(format_path(path), f"allows at most {expected} item(s), got {len(instance)}")
    if kind == "const":
        return RowProblem(format_path(path), f"must be {json.dumps(expected)}, got {json.dumps(instance)[:80]}")
    if kind == "enum":
        return RowProblem(format_path(path), f"must be one of {json.dumps(expected)}, got {json.dumps(instance)[:80]}")
    if kind == "additionalProperties":
        extra = sorted(set(instance) - set(error.schema.get("properties", {})))
        return RowProblem(format_path(path), f"unexpected key(s) {extra}")
    message = error.message if len(error.message) <= 200 else error.message[:200] + "..."
    return RowProblem(format_path(path), message)


def describe_schema_error(
    name: str, row: object, renames: tuple[tuple[str, str], ...] = (), *, skip: Iterable[str] = ()
) -> RowProblem | None:
    """The most relevant schema error of ``row`` as a :class:`RowProblem`, or None when the row is valid.

    ``skip`` lists field paths already reported (e.g. a missing verifier field): errors at or under them are
    ignored, so the caller can report a second, different problem of the same row.
    """
    skipped = tuple(skip)
    problems = []
    for error in _best_first(schema_errors(name, row, renames)):
        problem = _describe(error)
        if not any(problem.field == s or problem.field.startswith((s + ".", s + "[")) for s in skipped):
            problems.append(problem)
    return problems[0] if problems else None


def _best_first(errors: list) -> list:
    """Order errors most-relevant first: jsonschema's ``best_match`` descends into anyOf/if-then branches."""
    if not errors:
        return []
    best = jsonschema.exceptions.best_match(errors)
    return [best] + [error for error in errors if error is not best]
