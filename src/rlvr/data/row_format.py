"""The row-format contract: :class:`RowFormat`, which every data format implements.

It lives apart from the formats themselves (:mod:`rlvr.data.formats`, :mod:`rlvr.data.gym`) so that
:func:`rlvr.data.formats.choose_format` can import every format at module level without an import cycle.
"""

from __future__ import annotations

from rlvr.data.row_schemas import MISSING_VERIFIER_FIELDS, RowProblem, describe_schema_error


class RowFormat:
    """Base class: subclasses set ``schema_name`` / ``renames`` and implement ``convert``."""

    schema_name: str = ""
    renames: tuple[tuple[str, str], ...] = ()
    #: Written into the data card to say how the dataset was read.
    description: str = ""

    def convert(self, row: object) -> dict | None:
        """Task part of the canonical row (``problem`` + verifier field), or None when the row is invalid."""
        raise NotImplementedError

    def missing_verifier_fields(self, row: object) -> list[str]:
        """Paths of verifier fields the row lacks (absent, null or empty)."""
        return []

    def cross_field_problem(self, row: object) -> RowProblem | None:
        """A rule the schema cannot express, broken by ``row`` (None when it holds or does not apply)."""
        return None

    def verifier_hint(self) -> str:
        """How to fix a row without its verifier field."""
        return "add the verifier field to every row"

    def diagnose(self, row: object) -> list[RowProblem]:
        """Why ``convert`` rejected ``row``: at most a verifier problem and one more problem."""
        problems: list[RowProblem] = []
        missing = self.missing_verifier_fields(row)
        if missing:
            problems.append(
                RowProblem(
                    ", ".join(missing), f"{MISSING_VERIFIER_FIELDS}: {self.verifier_hint()}", MISSING_VERIFIER_FIELDS
                )
            )
        schema_problem = describe_schema_error(self.schema_name, row, self.renames, skip=missing)
        if schema_problem is not None:
            problems.append(schema_problem)
        elif not missing:
            cross = self.cross_field_problem(row)
            if cross is not None:
                problems.append(cross)
        if not problems:
            # convert() and the schema disagree: a bug in this module, not in the user's data.
            raise AssertionError(f"{type(self).__name__} rejected a row its schema accepts: {row!r:.200}")
        return problems
