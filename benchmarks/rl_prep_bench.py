"""Speed of ``rl_prep`` on generated math rows, as a ratio to the floor of parsing and re-serialising them.

The floor is what any JSONL-to-JSONL step must do at least: ``json.loads`` + ``json.dumps`` of every line of the
same file, written to a file, timed in the same process. ``prepare_rl_data`` runs without a tokenizer and without a
prompt file (plain text prompts), with ``split_validation_size`` splitting validation off, so it validates,
normalises, de-duplicates, splits, hashes the input and writes the outputs atomically. Goal: ratio <= 3.

    PYTHONPATH=src python benchmarks/rl_prep_bench.py [--rows 1000000] [--repeat 2] [--split 0.05]

Each measurement is the best of ``--repeat`` runs, floor and prep alternating, so that a busy machine penalises
both alike.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from rlvr.data.prep import prepare_rl_data

_WORDS = (
    "the",
    "sum",
    "of",
    "a",
    "number",
    "and",
    "its",
    "square",
    "is",
    "find",
    "value",
    "integer",
    "positive",
    "triangle",
    "area",
    "side",
    "length",
    "probability",
    "that",
    "two",
    "dice",
    "show",
    "prime",
    "total",
)


def generate(path: Path, rows: int, seed: int) -> None:
    """``rows`` lines of ``{"problem", "expected_answer", "id"}``; problems of 60-400 characters, a few repeated."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            a, b = rng.randrange(10**6), rng.randrange(10**6)
            words = " ".join(rng.choice(_WORDS) for _ in range(rng.randrange(8, 60)))
            problem = f"Let $x = {a}$ and $y = {b}$; {words}. What is $x + y$?"
            fh.write(json.dumps({"id": i, "problem": problem, "expected_answer": str(a + b)}) + "\n")


def floor_pass(src: Path, dst: Path) -> None:
    """The floor: every line parsed and re-serialised to a file, nothing else."""
    with open(src, "rb") as fin, open(dst, "w", encoding="utf-8") as fout:
        for line in fin:
            fout.write(json.dumps(json.loads(line)))
            fout.write("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--split", type=float, default=0.05, help="split_validation_size (0 for none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rl_prep_bench-") as tmp:
        src = Path(tmp) / "train.jsonl"
        started = time.perf_counter()
        generate(src, args.rows, args.seed)
        print(
            f"generated {args.rows} rows ({src.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.1f} s"
        )
        data_cfg = {
            "train": {"data_path": str(src), "split_validation_size": args.split or None},
            "validation": None,
            "default": {"env_name": "math"},
        }
        floor_times, prep_times = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            floor_pass(src, Path(tmp) / "floor.jsonl")
            floor_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            card = prepare_rl_data(data_cfg, out_dir=Path(tmp) / "rl_prep", tokenizer_dir=None, seed=args.seed)
            prep_times.append(time.perf_counter() - started)
        floor, prep = min(floor_times), min(prep_times)
        print(f"floor (json.loads + json.dumps): {floor:.2f} s  ({args.rows / floor:,.0f} rows/s)")
        print(f"prepare_rl_data:                 {prep:.2f} s  ({args.rows / prep:,.0f} rows/s)")
        print(f"ratio prep / floor: {prep / floor:.2f}  (goal <= 3)")
        print(
            f"rows in {card['rows_in']}, train {card['train']['rows_out']}, "
            f"validation {card['validation']['rows_out']}, duplicates {card['duplicates']}"
        )


if __name__ == "__main__":
    main()
