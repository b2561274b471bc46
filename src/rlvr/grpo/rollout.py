"""From prompts to a training batch: repeat, generate, score, and lay the samples out as ``[B, S]`` tensors.

Layout of a rollout batch (right-padded, one row per sample):

* ``input_ids [B, S]``: prompt tokens then generated tokens, then padding;
* ``attention_mask [B, S]``: 1 on real tokens;
* ``token_mask [B, S]``: 1 on generated tokens (the ones trained), 0 on the prompt and padding;
* ``generation_logprobs [B, S]``: the sampler's log-prob of each generated token at its position, 0 elsewhere —
  aligned like every log-prob tensor here: position ``t`` holds ``log p(x_t | x_<t)``;
* ``sample_mask [B]``: 1 unless the row is excluded from the loss (overlong filtering, prompt too long, a NeMo-Gym
  ``mask_sample`` flag with ``env.should_mask_flagged_samples``; see :func:`loss_sample_mask`);
* ``group_ids [B]``: rows sampled from the same prompt share an id (GRPO groups).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from rlvr.generation.base import GenerationOutput


@dataclass
class Rollout:
    """The samples of one generation batch and everything computed about them so far."""

    rows: list[dict]  # the canonical row of each sample (repeated G times per prompt)
    group_ids: torch.Tensor  # [B] int
    prompt_ids: list[list[int]]  # [B] prompt token ids
    outputs: list[GenerationOutput]  # [B] generations
    rewards: torch.Tensor | None = None  # [B] float (after scaling/shaping)
    raw_rewards: torch.Tensor | None = None  # [B] verifier rewards before scaling/shaping
    reward_errors: dict[str, float] = field(default_factory=dict)
    flagged: torch.Tensor | None = None  # [B] bool: the reward server asked to mask the sample (Gym mask_sample)
    # Per reward function (env.reward_functions) its unweighted values [B], and per sample its failed checks.
    reward_components: dict[str, torch.Tensor] = field(default_factory=dict)
    reward_failures: list[dict] | None = None

    @property
    def truncated(self) -> torch.Tensor:
        return torch.tensor([o.truncated for o in self.outputs], dtype=torch.bool)

    @property
    def response_lengths(self) -> torch.Tensor:
        return torch.tensor([len(o.token_ids) for o in self.outputs], dtype=torch.long)

    def select(self, index: torch.Tensor) -> Rollout:
        """The rollout restricted to rows ``index`` (dynamic sampling)."""
        idx = index.tolist()
        return Rollout(
            [self.rows[i] for i in idx],
            self.group_ids[index],
            [self.prompt_ids[i] for i in idx],
            [self.outputs[i] for i in idx],
            None if self.rewards is None else self.rewards[index],
            None if self.raw_rewards is None else self.raw_rewards[index],
            dict(self.reward_errors),
            None if self.flagged is None else self.flagged[index],
            reward_components={name: v[index] for name, v in self.reward_components.items()},
            reward_failures=None if self.reward_failures is None else [self.reward_failures[i] for i in idx],
        )

    @staticmethod
    def concat(parts: Sequence[Rollout]) -> Rollout:
        return Rollout(
            [r for p in parts for r in p.rows],
            torch.cat([p.group_ids for p in parts]),
            [x for p in parts for x in p.prompt_ids],
            [o for p in parts for o in p.outputs],
            torch.cat([p.rewards for p in parts]),
            torch.cat([p.raw_rewards for p in parts]),
            _sum_counts([p.reward_errors for p in parts]),
            None if any(p.flagged is None for p in parts) else torch.cat([p.flagged for p in parts]),
            reward_components={
                n: torch.cat([p.reward_components[n] for p in parts]) for n in parts[0].reward_components
            },
            reward_failures=None
            if any(p.reward_failures is None for p in parts)
            else [f for p in parts for f in p.reward_failures],
        )


def repeat_prompts(
    rows: Sequence[dict], prompt_ids: Sequence[list[int]], group_offset: int, times: int
) -> tuple[list[dict], list[list[int]], torch.Tensor]:
    """Each prompt copied ``times`` times, contiguously (upstream's ``repeat_interleave``), with group ids."""
    rep_rows = [row for row in rows for _ in range(times)]
    rep_ids = [list(ids) for ids in prompt_ids for _ in range(times)]
    groups = torch.arange(group_offset, group_offset + len(rows)).repeat_interleave(times)
    return rep_rows, rep_ids, groups


def to_train_tensors(
    prompt_ids: Sequence[list[int]], outputs: Sequence[GenerationOutput], *, pad_id: int, multiple_of: int = 1
) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask``, ``token_mask`` and ``generation_logprobs`` (module doc)."""
    lengths = [len(p) + len(o.token_ids) for p, o in zip(prompt_ids, outputs)]
    seq = max(lengths)
    seq = -(-seq // multiple_of) * multiple_of
    b = len(lengths)
    input_ids = torch.full((b, seq), pad_id, dtype=torch.long)
    attention = torch.zeros((b, seq), dtype=torch.long)
    token_mask = torch.zeros((b, seq), dtype=torch.float32)
    gen_lp = torch.zeros((b, seq), dtype=torch.float32)
    for i, (prompt, out) in enumerate(zip(prompt_ids, outputs)):
        n_p, n_g = len(prompt), len(out.token_ids)
        input_ids[i, :n_p] = torch.tensor(prompt, dtype=torch.long)
        if n_g:
            input_ids[i, n_p : n_p + n_g] = torch.tensor(out.token_ids, dtype=torch.long)
            gen_lp[i, n_p : n_p + n_g] = torch.tensor(out.logprobs, dtype=torch.float32)
            token_mask[i, n_p : n_p + n_g] = 1.0
        attention[i, : n_p + n_g] = 1
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "token_mask": token_mask,
        "generation_logprobs": gen_lp,
    }


def loss_sample_mask(
    rollout: Rollout,
    *,
    overlong_filtering: bool = False,
    max_input_seq_length: int | None = None,
    mask_flagged: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``sample_mask [B]`` (float, 1 = the sample is in the loss) and how many samples each rule removed.

    Masked samples stay in the rollout, so they still shape their group's baseline (as upstream does for
    truncated samples and over-long prompts); they only get no loss. ``mask_flagged``: a reward server that sets
    ``mask_sample`` says its reward is not a valid measurement, so the sample must not push the policy either way.
    """
    mask = torch.ones(len(rollout.rows))
    if overlong_filtering:
        mask = mask * (~rollout.truncated).float()
    if max_input_seq_length:  # upstream keeps such prompts in the rollout (and the baseline) but out of the loss
        mask = mask * torch.tensor([len(p) < max_input_seq_length for p in rollout.prompt_ids]).float()
    metrics: dict[str, float] = {}
    if rollout.flagged is not None:
        metrics["train/flagged_samples"] = float(rollout.flagged.sum())
        if mask_flagged:
            mask = mask * (~rollout.flagged).float()
            metrics["train/masked_flagged_samples"] = metrics["train/flagged_samples"]
    return mask, metrics


def rollout_metrics(rollout: Rollout, prefix: str = "train/") -> dict[str, Any]:
    """Generation statistics of a rollout (NeMo-RL names)."""
    lengths = rollout.response_lengths.to(torch.float64)
    truncated = rollout.truncated.to(torch.float64)
    prompt_len = torch.tensor([len(p) for p in rollout.prompt_ids], dtype=torch.float64)
    return {
        f"{prefix}mean_gen_tokens_per_sample": float(lengths.mean()),
        f"{prefix}max_gen_tokens_per_sample": float(lengths.max()),
        f"{prefix}mean_prompt_length": float(prompt_len.mean()),
        f"{prefix}mean_total_tokens_per_sample": float((lengths + prompt_len).mean()),
        f"{prefix}truncation_rate": float(truncated.mean()),
        f"{prefix}natural_termination_rate": float(1.0 - truncated.mean()),
    }


def reward_component_metrics(components: dict[str, torch.Tensor], prefix: str) -> dict[str, float]:
    """``<prefix>reward/<name>``: the mean unweighted value of each reward function."""
    return {f"{prefix}reward/{name}": float(values.to(torch.float64).mean()) for name, values in components.items()}


def _sum_counts(counts: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = {k for c in counts for k in c}
    return {k: sum(c.get(k, 0.0) for c in counts) for k in sorted(keys)}
