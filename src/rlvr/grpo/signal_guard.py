"""The zero-signal guard: notice when GRPO has nothing to learn from.

GRPO's advantage is a sample's reward relative to the other samples of its prompt. A group whose samples all got
the same reward (all wrong or all right) has zero advantage everywhere, so its loss gradient is zero (up to the KL
term). When *every* group of a step is like that, the optimizer step does nothing; when it lasts, the run spends its
whole budget and reports a change of +0.000 without any error. Typical causes: a policy that never (or always)
solves the prompts, a reward function that scores everything alike, ``max_new_tokens`` too small for an answer.

``train/frac_groups_zero_std`` is logged every step. ``grpo.zero_signal_patience`` consecutive steps at 1.0 print a
loud warning (repeated every further ``patience`` steps); with ``grpo.stop_on_zero_signal`` the run stops instead,
with a :class:`UserError` (``no_learning_signal``) after the step's metrics were logged.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from rlvr.errors import UserError

if TYPE_CHECKING:  # torch only where the fraction is computed: the report stage reads METRIC, without torch
    import torch

METRIC = "train/frac_groups_zero_std"
DEFAULT_PATIENCE = 10


def frac_groups_zero_std(rewards: torch.Tensor, group_ids: torch.Tensor) -> float:
    """Fraction of groups whose rewards are all exactly equal.

    ``rewards [B]`` are the rewards the advantages see (after scaling and shaping); ``group_ids [B]`` share an id
    per prompt. Equality is exact (max == min), not ``std < eps``, so a tiny but real spread still counts as signal.
    """
    import torch

    _, inverse = torch.unique(group_ids, return_inverse=True)
    n = int(inverse.max()) + 1
    values = rewards.to(torch.float64)
    high = torch.full((n,), -torch.inf, dtype=torch.float64).scatter_reduce(0, inverse, values, "amax")
    low = torch.full((n,), torch.inf, dtype=torch.float64).scatter_reduce(0, inverse, values, "amin")
    return float((high == low).to(torch.float64).mean())


def _explain(first: int, last: int) -> str:
    return (
        f"for {last - first + 1} consecutive GRPO steps ({first}..{last}) every group of samples got the same "
        f"reward ({METRIC} = 1.0): all advantages are zero and the policy is not learning. Check that the "
        f"policy can solve some prompts (validation/accuracy near 0 or 1 means it never or always does), the "
        f"reward function (env.*, `nemotron rewards score`), and policy.generation.max_new_tokens"
    )


class ZeroSignalGuard:
    """Counts consecutive steps at ``frac_groups_zero_std == 1.0``; warns, or stops the run, at ``patience``."""

    def __init__(self, patience: int | None = DEFAULT_PATIENCE, stop: bool = False, stream=None):
        self.patience, self.stop = patience, stop
        self.stream = stream
        self.streak_start: int | None = None
        self.streak = 0
        self.longest = 0
        self.steps_without_signal = 0
        self.warnings = 0

    @classmethod
    def from_config(cls, grpo: dict[str, Any]) -> ZeroSignalGuard:
        """From the complete ``grpo`` section (the loader has filled the schema's defaults)."""
        return cls(grpo["zero_signal_patience"], bool(grpo["stop_on_zero_signal"]))

    def replay(self, lines: list[dict[str, Any]]) -> None:
        """Rebuild the counters from the metrics lines kept on resume (no warnings are printed again)."""
        for line in lines:
            if line.get(METRIC) is not None:
                self._count(line["step"], line[METRIC])

    def _count(self, step: int, frac: float) -> None:
        if frac >= 1.0:
            self.streak_start = step if self.streak == 0 else self.streak_start
            self.streak += 1
            self.steps_without_signal += 1
            self.longest = max(self.longest, self.streak)
        else:
            self.streak, self.streak_start = 0, None

    def update(self, step: int, frac: float) -> None:
        """Record step ``step``; warn at every ``patience`` steps of a streak, or raise when told to stop."""
        self._count(step, frac)
        if not self.patience or self.streak == 0 or self.streak % self.patience:
            return
        message = _explain(self.streak_start, step)
        if self.stop:
            raise UserError(
                f"{message}. Stopped because grpo.stop_on_zero_signal is true (set it to false to "
                f"run on, or raise grpo.zero_signal_patience).",
                code="no_learning_signal",
            )
        self.warnings += 1
        bar = "!" * 100
        print(
            f"{bar}\nWARNING [no_learning_signal]: {message}.\n(grpo.stop_on_zero_signal=true stops the run "
            f"here instead.)\n{bar}",
            file=self.stream or sys.stderr,
            flush=True,
        )

    def summary(self) -> dict[str, Any]:
        return {
            "patience": self.patience,
            "steps_without_signal": self.steps_without_signal,
            "longest_streak": self.longest,
            "warnings": self.warnings,
        }
