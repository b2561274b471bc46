"""Deterministic integer-arithmetic problems, written as the math JSONL a user would bring.

Each row is a NeMo-RL legacy math row ``{"problem": "37+58", "expected_answer": "95"}``: the problem is the bare
expression (short, so the character-level prompt stays a few tokens) and the answer the exact integer result
(subtraction may be negative). Difficulty is set by the operations and the operand digit range.

Splits never share a problem text. Validation prompts are claimed first (``rl_val``, ``sft_val``), then RL
prompts, then SFT rows, each split drawing from its own seeded stream, so the held-out sets are independent of
the training-set sizes and RL prompts are unseen by the SFT policy.
"""

from __future__ import annotations

import json
import operator
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rlvr.errors import ConfigError
from rlvr.tiny.config import ProblemSplitConfig, TinyConfig
from rlvr.utils.atomic import atomic_file


@dataclass(frozen=True)
class Operation:
    """A binary integer operation and the symbol that writes it in a problem."""

    symbol: str
    apply: Callable[[int, int], int]


OPERATIONS: dict[str, Operation] = {
    "add": Operation("+", operator.add),
    "sub": Operation("-", operator.sub),
    "mul": Operation("*", operator.mul),
}

# Claim order: held-out sets first so that they do not depend on how many training rows are requested.
SPLIT_ORDER: tuple[tuple[str, str, str], ...] = (
    ("rl_val", "rl", "val_size"),
    ("sft_val", "sft", "val_size"),
    ("rl_train", "rl", "train_size"),
    ("sft_train", "sft", "train_size"),
)


def get_operation(name: str) -> Operation:
    """Look up an operation by name; an unknown name fails with the list of known ones."""
    try:
        return OPERATIONS[name]
    except KeyError:
        raise ConfigError(f"unknown arithmetic operation '{name}'; known: {', '.join(sorted(OPERATIONS))}.") from None


def count_operands(min_digits: int, max_digits: int) -> int:
    """Number of non-negative integers with ``min_digits..max_digits`` digits (0 counts as one digit)."""
    low = 0 if min_digits == 1 else 10 ** (min_digits - 1)
    return 10**max_digits - low


def count_problem_space(operations: Iterable[object], min_digits: int, max_digits: int) -> int:
    """Number of distinct problem texts: ``len(operations) * n_operands**2``."""
    return len(list(operations)) * count_operands(min_digits, max_digits) ** 2


def _draw_operand(rng: random.Random, min_digits: int, max_digits: int) -> int:
    # Digit count first, then a value of that length: otherwise almost every operand would have max_digits.
    digits = rng.randint(min_digits, max_digits)
    low = 0 if digits == 1 else 10 ** (digits - 1)
    return rng.randint(low, 10**digits - 1)


def generate_problems(
    n: int,
    *,
    operations: Iterable[str],
    min_digits: int,
    max_digits: int,
    seed: int | str,
    exclude: set[str] | frozenset[str] = frozenset(),
    where: str = "tiny.data",
) -> list[dict[str, str]]:
    """Draw ``n`` distinct problems not in ``exclude``; the same arguments always give the same list.

    ``seed`` may be a string (``random.Random`` hashes it with SHA-512, independent of PYTHONHASHSEED).
    Raises :class:`ConfigError` (naming ``where``) when the problem space cannot supply ``n`` unseen problems.
    """
    ops = [get_operation(name) for name in operations]
    space = count_problem_space(ops, min_digits, max_digits)
    taken = sum(_in_space(t, ops, min_digits, max_digits) for t in exclude)
    if n > space - taken:
        raise ConfigError(
            f"{where}: {n} distinct problems requested but only {space - taken} of the {space} problems with "
            f"operations {[o.symbol for o in ops]} and {min_digits}..{max_digits}-digit operands are left "
            f"({taken} used by other splits); lower the size or widen the difficulty (more digits or operations)."
        )
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict[str, str]] = []
    attempts, max_attempts = 0, 50 * n + 10_000
    while len(rows) < n:
        attempts += 1
        if attempts > max_attempts:
            raise ConfigError(
                f"{where}: found only {len(rows)} of {n} distinct unseen problems after {max_attempts} draws "
                f"({space} possible); lower the size or widen the difficulty (more digits or operations)."
            )
        op = ops[rng.randrange(len(ops))]
        a = _draw_operand(rng, min_digits, max_digits)
        b = _draw_operand(rng, min_digits, max_digits)
        text = f"{a}{op.symbol}{b}"
        if text in seen or text in exclude:
            continue
        seen.add(text)
        rows.append({"problem": text, "expected_answer": str(op.apply(a, b))})
    return rows


def _in_space(text: str, ops: list[Operation], min_digits: int, max_digits: int) -> bool:
    """Whether ``text`` (``a<symbol>b``, non-negative operands) is one of the problems this space can draw."""
    for op in ops:
        a, sep, b = text.partition(op.symbol)
        if sep and a.isdigit() and b.isdigit():
            return all(min_digits <= len(x) <= max_digits for x in (a, b))
    return False


# The operator a sloppy teacher confuses each one with (see ``tiny.data.sft_wrong_operator_rate``).
MISREAD: dict[str, str] = {"add": "sub", "sub": "add", "mul": "add"}


def _corrupt_answers(
    rows: list[dict[str, str]],
    rate: float,
    seed: int | str,
    wrong_answer: Callable[[dict[str, str], random.Random], str],
) -> list[dict[str, str]]:
    """A copy of ``rows`` where each row, picked independently with probability ``rate`` (seeded), has its answer
    replaced by ``wrong_answer(row, rng)``; the problem text is unchanged, so the demonstration is simply wrong."""
    if rate <= 0:
        return rows
    rng = random.Random(seed)
    return [{**row, "expected_answer": wrong_answer(row, rng)} if rng.random() < rate else row for row in rows]


def misread_operators(rows: list[dict[str, str]], rate: float, seed: int | str) -> list[dict[str, str]]:
    """A copy of ``rows`` where a seeded ``rate`` fraction of answers is that of the misread operator.

    A picked ``a-b`` is answered ``a+b`` (and so on per :data:`MISREAD`).
    """
    by_symbol = {op.symbol: name for name, op in OPERATIONS.items()}

    def misread(row: dict[str, str], rng: random.Random) -> str:
        symbol = next(c for c in row["problem"][1:] if c in by_symbol)  # [1:]: never a leading sign
        a, _, b = row["problem"].partition(symbol)
        return str(get_operation(MISREAD[by_symbol[symbol]]).apply(int(a), int(b)))

    return _corrupt_answers(rows, rate, seed, misread)


def slip_digits(rows: list[dict[str, str]], rate: float, seed: int | str) -> list[dict[str, str]]:
    """A copy of ``rows`` where a seeded ``rate`` fraction of answers has exactly one digit wrong.

    In a picked answer one digit position (uniform) gets a different digit (uniform over the others). A leading
    digit never becomes 0 (no "05", no "-0"), so the answer keeps its sign and length and stays a canonical
    integer that no verifier could read as the true one; a non-negative one-digit answer may become any other
    digit.
    """

    def slip(row: dict[str, str], rng: random.Random) -> str:
        answer = row["expected_answer"]
        sign, digits = ("-", answer[1:]) if answer.startswith("-") else ("", answer)
        pos = rng.randrange(len(digits))
        lowest = 1 if pos == 0 and (len(digits) > 1 or sign) else 0  # no "05", no "-0"
        choices = [d for d in "0123456789"[lowest:] if d != digits[pos]]
        return sign + digits[:pos] + rng.choice(choices) + digits[pos + 1 :]

    return _corrupt_answers(rows, rate, seed, slip)


def generate_splits(cfg: TinyConfig) -> dict[str, list[dict[str, str]]]:
    """All four splits in memory, in claim order, disjoint by problem text.

    Only ``sft_train`` may carry wrong answers (``tiny.data.sft_wrong_operator_rate``, then
    ``tiny.data.sft_digit_slip_rate``); the validation files and the RL prompts always hold the true results.
    """
    used: set[str] = set()
    splits: dict[str, list[dict[str, str]]] = {}
    for name, family, size_key in SPLIT_ORDER:
        spec: ProblemSplitConfig = getattr(cfg.data, family)
        rows = generate_problems(
            getattr(spec, size_key),
            operations=spec.operations,
            min_digits=spec.min_digits,
            max_digits=spec.max_digits,
            seed=f"{cfg.seed}:{name}",
            exclude=frozenset(used),
            where=f"tiny.data.{family}.{size_key} ({name})",
        )
        used.update(r["problem"] for r in rows)
        splits[name] = rows
    splits["sft_train"] = misread_operators(
        splits["sft_train"], cfg.data.sft_wrong_operator_rate, seed=f"{cfg.seed}:sft_train:teacher"
    )
    splits["sft_train"] = slip_digits(
        splits["sft_train"], cfg.data.sft_digit_slip_rate, seed=f"{cfg.seed}:sft_train:slips"
    )
    return splits


def write_tiny_datasets(out_dir: str | Path, cfg: TinyConfig) -> dict[str, Path]:
    """Write ``sft_train/sft_val/rl_train/rl_val.jsonl`` under ``out_dir``; return their paths by split name.

    Everything is generated before anything is written, and each file is renamed into place only when complete.
    """
    out_dir = Path(out_dir)
    splits = generate_splits(cfg)
    paths: dict[str, Path] = {}
    for name, rows in splits.items():
        path = out_dir / f"{name}.jsonl"
        with atomic_file(path, encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
        paths[name] = path
    return paths
