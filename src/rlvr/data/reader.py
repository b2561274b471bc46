"""Stream a JSONL file through a row format, keeping good rows and collecting the bad lines.

Bad lines do not stop the reading: every file is read to the end so that one error message can list the first
:data:`MAX_REPORTED` bad lines (``file:line: field: problem``) and the total, and the user fixes them all at once.
Blank lines are skipped (and counted).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from rlvr.data.formats import RowFormat
from rlvr.data.row_schemas import MISSING_VERIFIER_FIELDS, RowProblem
from rlvr.errors import DataError

#: How many bad lines one error message lists.
MAX_REPORTED = 10


@dataclass
class ProblemLog:
    """Bad lines seen so far, across files: the first :data:`MAX_REPORTED` in full, the rest counted."""

    lines: list[str] = field(default_factory=list)
    bad_lines: int = 0
    reported: int = 0
    formats: dict = field(default_factory=dict)  # file -> how it was read, for files with bad lines
    codes: set = field(default_factory=set)
    # How the message names the input, the way to retry and how formats were chosen (rl_prep / rewards score).
    subject: str = "the training data"
    retry: str = "run the step again"
    chosen_by: str = "the dataset's env_name and keys"

    def add(self, source: str, lineno: int, problems: list[RowProblem], fmt: RowFormat) -> None:
        """Record the problems of one bad line of ``source``, read with ``fmt``."""
        self.bad_lines += 1
        self.formats.setdefault(
            source,
            f"{fmt.description} (schemas/rows/{fmt.schema_name}.schema.json)" if fmt.schema_name else fmt.description,
        )
        self.codes.update(problem.code for problem in problems if problem.code)
        if self.reported < MAX_REPORTED:
            self.reported += 1
            self.lines.extend(f"{source}:{lineno}: {p.field}: {p.message}" for p in problems)

    def raise_if_any(self) -> None:
        """Raise one :class:`DataError` listing the bad lines, if there were any."""
        if not self.bad_lines:
            return
        shown = self.reported
        more = f"; {self.bad_lines - shown} more not shown" if self.bad_lines > shown else ""
        body = "\n".join(f"  {line}" for line in self.lines)
        code = MISSING_VERIFIER_FIELDS if MISSING_VERIFIER_FIELDS in self.codes else None
        formats = "\n".join(f"  {source} is read as {how}" for source, how in self.formats.items())
        raise DataError(
            f"{self.bad_lines} bad line(s) in {self.subject} (first {shown} below{more}). Fix or remove these "
            f"lines and {self.retry}:\n{body}\nFormats (chosen by {self.chosen_by}):\n{formats}",
            code=code,
        )


@dataclass
class Dataset:
    """The good rows of one file (task part of the canonical row plus ``source``) and what was skipped."""

    rows: list[dict]
    blank_lines: int
    lines_read: int


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file, for the data card's provenance."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def first_object(path: str) -> object:
    """The first line of ``path`` that parses as JSON (None if there is none); decides a dataset's format."""
    with open(path, "rb") as fh:
        for raw in fh:
            try:
                return json.loads(raw)
            except ValueError:
                continue
    return None


def _json_problem(raw: bytes, exc: ValueError) -> RowProblem:
    if isinstance(exc, UnicodeDecodeError):
        return RowProblem("(line)", f"not UTF-8 text ({exc.reason} at byte {exc.start})")
    if isinstance(exc, json.JSONDecodeError):
        # The line holds one document, so the character offset is more telling than json's line/column.
        where = "the line ends early" if exc.pos >= len(exc.doc.rstrip()) else f"at character {exc.pos + 1}"
        return RowProblem("(line)", f"not valid JSON: {exc.msg} ({where})")
    return RowProblem("(line)", f"not valid JSON: {exc}")


def read_dataset(path: str, fmt: RowFormat, log: ProblemLog) -> Dataset:
    """Parse and convert every line of ``path``; bad lines go to ``log``, good rows get ``source = path:line``.

    This loop is the hot path of ``rl_prep``: one JSON parse and one ``fmt.convert`` per line, nothing else.
    """
    rows: list[dict] = []
    # Decoding the bytes here and parsing with the decoder directly skips json.loads' per-call encoding sniffing,
    # a third of the parse time; a UTF-8 byte-order mark is accepted on the first line only, as json.loads does.
    append, convert, decode = rows.append, fmt.convert, json.JSONDecoder().decode
    blank = 0
    lineno = 0
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                row = decode(raw.decode("utf-8") if lineno > 1 else raw.decode("utf-8-sig"))
            except ValueError as exc:
                if raw.strip():
                    log.add(path, lineno, [_json_problem(raw, exc)], fmt)
                else:
                    blank += 1
                continue
            item = convert(row)
            if item is None:
                log.add(path, lineno, fmt.diagnose(row), fmt)
                continue
            item["source"] = f"{path}:{lineno}"
            append(item)
    return Dataset(rows=rows, blank_lines=blank, lines_read=lineno)
