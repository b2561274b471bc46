"""The data card (``data_card.json``): what went in, what came out, and what the prompts look like.

Counts obey ``rows_in = rows_out + duplicates + rejects`` for the whole card (a row split off to validation is
still out). Prompt-length statistics use nearest-rank percentiles so that they are exact integers of the data;
``prompt_tokens`` statistics are null when the step ran without a tokenizer. The card holds no timestamps or
temporary paths: the same input and config give the same bytes.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence

CARD_VERSION = 1


def length_stats(values: Sequence[int] | None) -> dict | None:
    """``{count, min, max, mean, p50, p90, p99}`` of ``values`` (None for None or no values)."""
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> int:  # nearest-rank percentile: the smallest value with at least q% at or below it
        return ordered[min(n - 1, max(0, math.ceil(q / 100 * n) - 1))]

    return {
        "count": n,
        "min": ordered[0],
        "max": ordered[-1],
        "mean": round(sum(ordered) / n, 2),
        "p50": rank(50),
        "p90": rank(90),
        "p99": rank(99),
    }


def split_summary(rows: Sequence[dict], *, duplicates: int, rejects: dict[str, int]) -> dict:
    """Counts and prompt statistics of one output split (``rows`` are its final canonical rows)."""
    tokens = [row["prompt_tokens"] for row in rows if row["prompt_tokens"] is not None]
    return {
        "rows_out": len(rows),
        "duplicates": duplicates,
        "rejects": dict(sorted(rejects.items())),
        "per_task": dict(sorted(Counter(row["task_name"] for row in rows).items())),
        "prompt_chars": length_stats([len(row["prompt"]) for row in rows]),
        "prompt_tokens": length_stats(tokens) if len(tokens) == len(rows) else None,
    }


def build_card(
    *,
    sources: list[dict],
    train: dict,
    validation: dict,
    seed: int,
    tokenizer: str | None,
    max_input_seq_length: int | None,
) -> dict:
    """The whole card from the per-source records and the two split summaries."""
    rejects = sum(train["rejects"].values()) + sum(validation["rejects"].values())
    return {
        "card_version": CARD_VERSION,
        "step": "data_prep/rl_prep",
        "seed": seed,
        "tokenizer": tokenizer,
        "max_input_seq_length": max_input_seq_length,
        "rows_in": sum(source["rows_in"] for source in sources),
        "rows_out": train["rows_out"] + validation["rows_out"],
        "duplicates": train["duplicates"] + validation["duplicates"],
        "rejects": rejects,
        "train": train,
        "validation": validation,
        "sources": sources,
    }


def encode_card(card: dict) -> str:
    """The card as written: indented, sorted keys, trailing newline."""
    return json.dumps(card, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
