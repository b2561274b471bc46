"""What happens to rewards and rows between the verifier and the advantage: scaling, shaping, filtering.

Order in a GRPO step (spec §1.2): scale (``grpo.reward_scaling``) → shape (``grpo.reward_shaping``) → per-row
baseline/std → dynamic sampling (``grpo.use_dynamic_sampling``) → … → sequence-level log-prob-error mask
(``grpo.seq_logprob_error_threshold``) → advantages. Validation scores (mean reward, pass@k) live here too because
they are the same kind of per-group reduction. The keyword arguments carry the config key names, so a caller can
pass a config block as ``**{k: v for k, v in block.items() if k != "enabled"}``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rlvr.errors import ConfigError, UserError


def scale_rewards(
    rewards: torch.Tensor,
    *,
    source_min: float = 0.0,
    source_max: float = 1.0,
    target_min: float = 0.0,
    target_max: float = 1.0,
) -> torch.Tensor:
    """Affine map of ``clamp(r, source_min, source_max)`` onto ``[target_min, target_max]``, ``[B] -> [B]``.

    ``r' = t_min + (clamp(r, s_min, s_max) - s_min) / (s_max - s_min) · (t_max - t_min)``. Apply it to the total
    reward and to every ``reward/<name>`` component, before shaping.
    """
    if not source_max > source_min:
        raise ConfigError(
            f"grpo.reward_scaling.source_max ({source_max}) must be greater than source_min ({source_min})"
        )
    clamped = rewards.clamp(min=source_min, max=source_max)
    return target_min + (clamped - source_min) / (source_max - source_min) * (target_max - target_min)


def shape_rewards(
    rewards: torch.Tensor,
    *,
    truncated: torch.Tensor,
    response_lengths: torch.Tensor,
    stop_properly_penalty_coef: float | None = None,
    overlong_buffer_length: int | None = None,
    overlong_buffer_penalty: float | None = None,
    max_response_length: int | None = None,
) -> torch.Tensor:
    """Shaped rewards ``[B]`` (the caller keeps the unshaped copy for logging and for dynamic sampling).

    * ``stop_properly_penalty_coef = c`` in [0, 1]: ``r ← c·r`` where ``truncated [B]`` (the response hit the length
      limit instead of stopping); the DAPO keys are then ignored.
    * otherwise the DAPO overlong penalty: with ``L_exp = max_response_length - overlong_buffer_length``,
      ``r ← r + min(-(len - L_exp) / overlong_buffer_length · overlong_buffer_penalty, 0)``, where ``len``
      (``response_lengths [B]``) is the token count of the first assistant message.
    """
    if stop_properly_penalty_coef is not None:
        if not 0.0 <= stop_properly_penalty_coef <= 1.0:
            raise ConfigError(
                f"grpo.reward_shaping.stop_properly_penalty_coef must lie in [0, 1], got {stop_properly_penalty_coef}"
            )
        return torch.where(truncated.to(torch.bool), rewards * stop_properly_penalty_coef, rewards)
    dapo = {
        "overlong_buffer_length": overlong_buffer_length,
        "overlong_buffer_penalty": overlong_buffer_penalty,
        "max_response_length": max_response_length,
    }
    missing = [k for k, v in dapo.items() if v is None]
    if missing:
        raise ConfigError(
            f"grpo.reward_shaping is enabled but {', '.join(missing)} is null; set the DAPO overlong keys "
            "or stop_properly_penalty_coef"
        )
    if not 0 < overlong_buffer_length <= max_response_length:
        raise ConfigError(
            f"grpo.reward_shaping.overlong_buffer_length must lie in (0, max_response_length={max_response_length}], "
            f"got {overlong_buffer_length}"
        )
    expected = max_response_length - overlong_buffer_length
    excess = response_lengths.to(rewards.dtype) - expected
    penalty = (-excess / overlong_buffer_length * overlong_buffer_penalty).clamp(max=0.0)
    return rewards + penalty


@dataclasses.dataclass(frozen=True)
class DynamicSamplingResult:
    """Outcome of one generation batch offered to :class:`DynamicSampler`.

    ``batch`` holds exactly ``target_rows`` rows when ``complete``, else None (generate another batch, same step).
    ``num_discarded_valid_samples`` counts rows that passed the filter but were cut by the final slice.
    """

    complete: bool
    batch: dict[str, Any] | None
    num_gen_batches: int
    num_cached_rows: int
    num_discarded_valid_samples: int


class DynamicSampler:
    """DAPO dynamic sampling: keep rows with ``std != 0`` until ``target_rows`` (= P·G) are collected.

    Rows whose group (or, with LOO, whose peers) show no reward spread carry no gradient signal. Kept rows are
    cached across generation batches of the same step; once the cache holds ``target_rows`` rows the first
    ``target_rows`` are returned (this can cut a prompt group; the estimator then recomputes statistics on the
    filtered rows) and the sampler resets. While the cache is short, batches ``1..max_gen_batches`` return
    ``complete=False``; a short cache after batch ``max_gen_batches + 1`` is an error.
    """

    def __init__(self, target_rows: int, max_gen_batches: int):
        if target_rows <= 0:
            raise ConfigError(f"dynamic sampling needs a positive target of rows (P·G), got {target_rows}")
        if max_gen_batches < 1:
            raise ConfigError(f"grpo.dynamic_sampling_max_gen_batches must be >= 1, got {max_gen_batches}")
        self.target_rows = target_rows
        self.max_gen_batches = max_gen_batches
        self.reset()

    def reset(self) -> None:
        """Forget cached rows and the generation-batch count (start of a new step)."""
        self._cache: dict[str, Any] | None = None
        self._cached_rows = 0
        self.num_gen_batches = 0

    def add(self, batch: Mapping[str, Any], std: torch.Tensor) -> DynamicSamplingResult:
        """Offer one generation batch: columns of ``B`` rows (tensors ``[B, ...]`` or lists) and ``std [B]``."""
        self.num_gen_batches += 1
        keep = torch.nonzero(std != 0).flatten()
        kept = {key: _take_rows(key, col, keep, std.shape[0]) for key, col in batch.items()}
        self._cache = kept if self._cache is None else {k: _concat(k, self._cache[k], kept[k]) for k in self._cache}
        self._cached_rows += int(keep.numel())
        if self._cached_rows < self.target_rows:
            if self.num_gen_batches > self.max_gen_batches:
                raise UserError(
                    f"dynamic sampling found {self._cached_rows} of {self.target_rows} rows with reward spread after "
                    f"{self.num_gen_batches} generation batches; raise grpo.dynamic_sampling_max_gen_batches or "
                    "grpo.batch_multiplier, or use prompts that are neither always solved nor never solved"
                )
            return DynamicSamplingResult(False, None, self.num_gen_batches, self._cached_rows, 0)
        head = torch.arange(self.target_rows)
        selected = {k: _take_rows(k, col, head, self._cached_rows) for k, col in self._cache.items()}
        result = DynamicSamplingResult(
            True, selected, self.num_gen_batches, self._cached_rows, self._cached_rows - self.target_rows
        )
        self.reset()
        return result


def _take_rows(key: str, column: Any, index: torch.Tensor, num_rows: int) -> Any:
    if len(column) != num_rows:
        raise ValueError(f"column {key!r} has {len(column)} rows, expected {num_rows}")
    if isinstance(column, torch.Tensor):
        return column[index.to(column.device)]
    if isinstance(column, Sequence) and not isinstance(column, str):
        return [column[i] for i in index.tolist()]
    raise TypeError(f"column {key!r}: dynamic sampling handles tensors and lists, got {type(column).__name__}")


def _concat(key: str, first: Any, second: Any) -> Any:
    if isinstance(first, torch.Tensor):
        if first.shape[1:] != second.shape[1:]:
            raise ValueError(f"column {key!r}: cannot stack rows of shape {first.shape[1:]} and {second.shape[1:]}")
        return torch.cat([first, second], dim=0)
    return list(first) + list(second)


def seq_logprob_error(
    generation_logprobs: torch.Tensor,
    prev_logprobs: torch.Tensor,
    token_mask: torch.Tensor,
    sample_mask: torch.Tensor,
) -> torch.Tensor:
    """Per-sequence multiplicative probability error ``e_i = Σ_t m·exp(|lp_gen - lp_prev|·m) / Σ_t m``, ``[B]``.

    ``m = token_mask [B, S] · sample_mask [B]`` (tensors aligned, nothing shifted). ``e ≥ 1``; 1 means the
    sampler and the trainer agree exactly. Rows without a valid token get 0 (never above a threshold).
    """
    m = token_mask.to(torch.float64) * sample_mask.to(torch.float64).unsqueeze(-1)
    diff = (generation_logprobs.to(torch.float64) - prev_logprobs.to(torch.float64)).abs()
    count = m.sum(-1)
    err = (m * torch.exp(diff * m)).sum(-1) / count.clamp(min=1)
    return torch.where(count > 0, err, torch.zeros_like(err)).to(generation_logprobs.dtype)


def mask_by_seq_logprob_error(
    generation_logprobs: torch.Tensor,
    prev_logprobs: torch.Tensor,
    token_mask: torch.Tensor,
    sample_mask: torch.Tensor,
    *,
    threshold: float | None,
    rewards: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """New ``sample_mask [B]`` with rows whose error exceeds ``threshold`` zeroed, and the logging metrics.

    Runs before the advantages: masked rows still enter their group's baseline but not the loss. Metrics:
    ``{max,mean,min}_seq_mult_prob_error`` over rows with valid tokens, the same ``…_after_mask``,
    ``num_masked_seqs_by_logprob_error`` and ``masked_correct_pct`` (percent of masked rows with reward > 0).
    """
    err = seq_logprob_error(generation_logprobs, prev_logprobs, token_mask, sample_mask)
    has_tokens = (token_mask.to(torch.float64) * sample_mask.to(torch.float64).unsqueeze(-1)).sum(-1) > 0
    masked = has_tokens & (err > threshold) if threshold is not None else torch.zeros_like(has_tokens)
    new_mask = torch.where(masked, torch.zeros_like(sample_mask), sample_mask)
    metrics = {
        **_spread("seq_mult_prob_error", err[has_tokens]),
        **_spread("seq_mult_prob_error_after_mask", err[has_tokens & ~masked]),
    }
    metrics["num_masked_seqs_by_logprob_error"] = float(masked.sum())
    if rewards is not None and bool(masked.any()):
        metrics["masked_correct_pct"] = float((rewards[masked] > 0).to(torch.float64).mean() * 100)
    else:
        metrics["masked_correct_pct"] = 0.0
    return new_mask, metrics


def _spread(name: str, values: torch.Tensor) -> dict[str, float]:
    if values.numel() == 0:
        return {f"max_{name}": 0.0, f"mean_{name}": 0.0, f"min_{name}": 0.0}
    v = values.to(torch.float64)
    return {f"max_{name}": float(v.max()), f"mean_{name}": float(v.mean()), f"min_{name}": float(v.min())}


def compute_validation_scores(rewards: torch.Tensor, group_ids: torch.Tensor) -> dict[str, float]:
    """Validation scores of ``rewards [B]`` grouped by ``group_ids [B]`` (one group = one prompt's k rollouts).

    ``accuracy`` = mean reward over all rollouts (upstream's name; it is a mean reward, not a correctness rate);
    ``pass_k`` = fraction of prompts with any rollout reward > 0; ``k`` = the largest group size (upstream logs
    ``pass_k`` only for k > 1).
    """
    if rewards.dim() != 1 or rewards.shape != group_ids.shape or rewards.numel() == 0:
        raise ValueError(
            f"rewards and group_ids must be non-empty [B], got {tuple(rewards.shape)} and {tuple(group_ids.shape)}"
        )
    _, inv, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    num_positive = torch.zeros(counts.numel(), dtype=torch.float64, device=rewards.device)
    num_positive.index_add_(0, inv, (rewards > 0).to(torch.float64))
    return {
        "accuracy": float(rewards.to(torch.float64).mean()),
        "pass_k": float((num_positive > 0).to(torch.float64).mean()),
        "k": float(counts.max()),
    }
