"""How each train metric combines over micro-batches, optimizer steps and data-parallel ranks: declared once.

A policy's ``train`` folds its metrics three times: the micro-batches of one global batch (one optimizer step),
the optimizer steps of one GRPO step, and (data parallel) the ranks. The loss function's metrics are already
divided by the *global* counts, so they add up over micro-batches and ranks, and one GRPO step reports their mean
over optimizer steps. Metrics that describe the whole global batch are the same on every rank after the
all-reduces (NeMo-RL declares each reduction next to the metric in the same spirit: ``MetricNormalizer``).

========================== ============== ============================== ==========
metric                     micro-batches  optimizer steps (one GRPO step) ranks
========================== ============== ============================== ==========
loss and loss_fn metrics   sum            mean                           sum
``*_min`` / ``*_max``      min / max      min / max                      min / max
global_valid_seqs / _toks  (set per step) mean                           rank 0
grad_norm                  (set per step) last step (pre-clip norm)      rank 0
lr, num_optimizer_steps    (set once)     (set once)                     rank 0
========================== ============== ============================== ==========
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import Any


class Fold(enum.Enum):
    """One level of folding: the parts whose metrics are combined."""

    MICRO_BATCHES = "micro_batches"
    OPTIMIZER_STEPS = "optimizer_steps"
    RANKS = "ranks"


# Per metric kind: the reduction at each level ("sum", "mean" over all parts, "min", "max", "first", "last").
_ADDITIVE = {Fold.MICRO_BATCHES: "sum", Fold.OPTIMIZER_STEPS: "mean", Fold.RANKS: "sum"}
_MIN = dict.fromkeys(Fold, "min")
_MAX = dict.fromkeys(Fold, "max")
_GLOBAL_COUNT = {Fold.OPTIMIZER_STEPS: "mean", Fold.RANKS: "first"}
_LAST_STEP = {Fold.OPTIMIZER_STEPS: "last", Fold.RANKS: "first"}
_PER_CALL = {Fold.RANKS: "first"}

REDUCTIONS: dict[str, dict[Fold, str]] = {
    "global_valid_seqs": _GLOBAL_COUNT,
    "global_valid_toks": _GLOBAL_COUNT,
    "grad_norm": _LAST_STEP,
    "lr": _PER_CALL,
    "num_optimizer_steps": _PER_CALL,
}


def reduction(name: str, level: Fold) -> str:
    """The reduction of metric ``name`` at ``level``: the table above; a loss metric by its name's suffix."""
    if name in REDUCTIONS:
        how = REDUCTIONS[name].get(level)
        if how is None:
            raise ValueError(f"train metric {name!r} is set once per {level.value}, not folded over them")
        return how
    if name.endswith("_min"):
        return _MIN[level]
    if name.endswith("_max"):
        return _MAX[level]
    return _ADDITIVE[level]


def _apply(how: str, values: list[float], parts: int) -> float:
    if how == "sum":
        return sum(values)
    if how == "mean":  # over every part: a part without the metric counts as 0
        return sum(values) / parts
    if how == "min":
        return min(values)
    if how == "max":
        return max(values)
    return values[0] if how == "first" else values[-1]


def fold(parts: Iterable[Mapping[str, Any]], level: Fold) -> dict[str, float]:
    """Combine the metrics of ``parts`` (micro-batches, optimizer steps or ranks, in order) into one dict.

    Values may be python numbers or 0-d tensors; keys keep their first-seen order.
    """
    parts = [{k: float(v) for k, v in part.items()} for part in parts]
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for part in parts for k in part):
        values = [part[key] for part in parts if key in part]
        out[key] = _apply(reduction(key, level), values, len(parts))
    return out
