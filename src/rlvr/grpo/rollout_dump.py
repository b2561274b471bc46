"""Rollout dumps: what the policy generated at each step, to read for reward hacking and for the report.

With ``logger.rollout_dumps`` = ``sampled`` (``logger.rollout_dump_rows`` samples per step, drawn with a seed of
``grpo.seed`` and the step, sorted by position) or ``full`` (every sample), step ``N`` writes
``<run>/rlvr/rollouts/step_<N>.jsonl`` atomically (a step redone after a resume replaces its file), one object per
sample:

``step``, ``sample`` (position in the step's batch), ``group`` (samples of one prompt share it), ``task_name``,
``prompt`` (as the model saw it), ``response``, ``reference`` (the ground truth; for code rows the tests' kind and
count), ``reward`` (after scaling and shaping: what the advantages saw), ``raw_reward`` (the weighted sum of the
reward functions), ``advantage`` (mean over the response's tokens), ``in_loss`` (false when a mask removed the
sample), ``truncated``, ``response_tokens``, ``rewards`` (each reward function's own value, unweighted) and
``failures`` (``{function: {"kind": cause, "detail": text}}`` for each check that failed, e.g. a ``timeout``).

The same rows (at most ``rollout_dump_rows``) go to W&B and MLflow as a sample table (see rlvr/tracking.py).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from rlvr.grpo.rollout import Rollout
from rlvr.utils.atomic import atomic_file

MODES = ("none", "sampled", "full")


def dump_path(out_dir: Path, step: int) -> Path:
    """``<run>/rlvr/rollouts/step_<N>.jsonl``: the report reads this path."""
    return Path(out_dir) / "rollouts" / f"step_{step}.jsonl"


class RolloutDumps:
    """Writes one JSONL per training step and hands a sample of its rows to the trackers' sample tables."""

    def __init__(self, out_dir: Path, *, mode: str, rows: int, seed: int):
        if mode not in MODES:
            raise ValueError(f"logger.rollout_dumps must be one of {MODES}, got {mode!r}")
        self.out_dir, self.mode, self.rows, self.seed = Path(out_dir), mode, rows, seed

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def chosen(self, step: int, batch_size: int) -> list[int]:
        """Positions dumped at ``step``: all (``full``) or a seeded sample, in batch order."""
        return list(range(batch_size)) if self.mode == "full" else self._sample(step, batch_size)

    def write(
        self, step: int, rollout: Rollout, advantages: torch.Tensor, token_mask: torch.Tensor, sample_mask: torch.Tensor
    ) -> list[dict[str, Any]]:
        """Dump step ``step`` (``advantages``/``token_mask`` ``[B, S]``, ``sample_mask`` ``[B]``); returns the rows of
        its sample table (``[]`` when dumps are off)."""
        if not self.enabled:
            return []
        index = self.chosen(step, len(rollout.rows))
        per_sample_adv = (advantages * token_mask).sum(-1) / token_mask.sum(-1).clamp(min=1)
        records = [_record(step, i, rollout, float(per_sample_adv[i]), bool(sample_mask[i] > 0)) for i in index]
        path = dump_path(self.out_dir, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        # The table is what `sampled` would dump (a full dump of a big batch is too long a table).
        return [records[k] for k in self._sample(step, len(records))]

    def _sample(self, step: int, count: int) -> list[int]:
        if count <= self.rows:
            return list(range(count))
        return sorted(random.Random(self.seed * 1_000_003 + step).sample(range(count), self.rows))


def _record(step: int, i: int, rollout: Rollout, advantage: float, in_loss: bool) -> dict[str, Any]:
    row, output = rollout.rows[i], rollout.outputs[i]
    return {
        "step": step,
        "sample": i,
        "group": int(rollout.group_ids[i]),
        "task_name": row.get("task_name"),
        "prompt": row.get("prompt"),
        "response": output.text,
        "reference": _reference(row),
        "reward": float(rollout.rewards[i]),
        "raw_reward": float(rollout.raw_rewards[i]),
        "advantage": advantage,
        "in_loss": in_loss,
        "truncated": bool(output.truncated),
        "response_tokens": len(output.token_ids),
        "rewards": {name: float(values[i]) for name, values in rollout.reward_components.items()},
        "failures": rollout.reward_failures[i] if rollout.reward_failures is not None else {},
    }


def _reference(row: dict) -> Any:
    if "ground_truth" in row:
        return row["ground_truth"]
    tests = row.get("tests")
    if isinstance(tests, dict):  # whole test suites would swamp the dump: their kind and size say enough here
        return {"tests": tests.get("kind"), "cases": len(tests.get("inputs") or []) or None}
    return None


def table_columns(records: list[dict[str, Any]]) -> tuple[list[str], list[list[Any]]]:
    """A flat table of dump records for W&B / MLflow: one column per reward function, failures as text."""
    names = sorted({name for r in records for name in r["rewards"]})
    columns = ["step", "sample", "group", "prompt", "response", "reference", "reward", "advantage"]
    columns += [f"reward/{n}" for n in names] + ["failures"]
    data = []
    for r in records:
        failures = "; ".join(f"{n}: {f['kind']} ({f['detail']})" for n, f in sorted(r["failures"].items()))
        data.append(
            [r["step"], r["sample"], r["group"], r["prompt"], r["response"], json.dumps(r["reference"])]
            + [r["reward"], r["advantage"]]
            + [r["rewards"].get(n) for n in names]
            + [failures]
        )
    return columns, data
