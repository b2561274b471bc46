"""Group-relative advantages: the per-prompt baseline and spread that turn rewards into a learning signal.

GRPO has no value model: each prompt is sampled G times and every response is judged against its siblings.
For a group with rewards ``r_1..r_n`` (rows sharing a ``group_id``; rows need not be contiguous):

* no leave-one-out: ``b = mean(r)``, ``s = std(r)`` (Bessel-corrected, ``n - 1`` in the denominator);
* leave-one-out (LOO): ``b_i = mean_{j != i} r_j`` and ``s_i`` = Bessel-corrected std of the *peers* of row i,
  so a group of two has ``s_i = 0`` (one peer has no spread);
* ``A_i = r_i - b_i``; with ``normalize``: ``A_i / (s_i + 1e-6)`` only where ``s_i > 0``; rows with ``s_i = 0``
  keep the raw difference (neither divided nor zeroed). A group of one gets ``A = 0``.

Whether a group (or a row's peers) is "all equal" is decided by exact comparison of the reward values, not by
testing a computed variance against zero: ``E[r^2] - E[r]^2`` in floating point turns identical non-dyadic
rewards (e.g. seven copies of 0.95) into a tiny positive std and a huge advantage. Statistics are computed in
float64 with a two-pass (mean, then squared deviations) variance and an exact leave-one-out downdate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from rlvr.errors import ConfigError
from rlvr.grpo.advantage_config import complete_sections, unknown_estimator
from rlvr.grpo.loss import get_kl_estimator

AdvantageEstimator = Callable[..., torch.Tensor]

# name -> estimator class; every class is built the same way: ``cls.from_config(adv_config, loss_config)``.
ADVANTAGE_ESTIMATORS: dict[str, type] = {}


def register_advantage_estimator(name: str) -> Callable[[type], type]:
    """Class decorator: register an estimator under ``name`` (``grpo.adv_estimator.name``).

    The class provides ``from_config(adv_config, loss_config)`` (both complete sections: every key present) and
    ``__call__(rewards [B], group_ids [B], mask [B, S], *, prev_logprobs=None, reference_logprobs=None) -> [B, S]``.
    """

    def register(cls: type) -> type:
        cls.name = name
        ADVANTAGE_ESTIMATORS[name] = cls
        return cls

    return register


#: Added to the std before dividing, as upstream, so that tiny spreads do not explode the advantage.
NORMALIZE_EPSILON = 1e-6


def _check_inputs(rewards: torch.Tensor, group_ids: torch.Tensor) -> None:
    """Reject shapes and values that would silently give wrong groups (programming errors, not user errors)."""
    if rewards.dim() != 1 or group_ids.dim() != 1 or rewards.shape != group_ids.shape:
        raise ValueError(
            f"rewards and group_ids must both be 1-D of equal length, got {tuple(rewards.shape)} and "
            f"{tuple(group_ids.shape)}"
        )
    if group_ids.is_floating_point() or group_ids.is_complex():
        raise ValueError(f"group_ids must be an integer tensor, got {group_ids.dtype}")
    if not bool(torch.isfinite(rewards).all()):
        bad = torch.nonzero(~torch.isfinite(rewards)).flatten().tolist()
        raise ValueError(f"rewards must be finite; rows {bad[:10]} are NaN or infinite")


def _group_stats64(
    rewards: torch.Tensor, group_ids: torch.Tensor, *, leave_one_out: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row baseline and std in float64, both ``[B]``; see the module docstring for the formulas.

    Rows whose reference set (the group, or the peers with LOO) holds a single distinct value get
    ``std = 0`` exactly and a baseline equal to that value exactly, so their advantage is exactly
    ``r_i - value`` (0 for an all-equal group).
    """
    _check_inputs(rewards, group_ids)
    # "+ 0.0" maps -0.0 to +0.0 so that exact-equality grouping cannot split them.
    r = rewards.detach().to(torch.float64) + 0.0
    if r.numel() == 0:
        return r.clone(), r.clone()
    _, inv = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inv.max()) + 1
    n_g = torch.bincount(inv, minlength=num_groups).to(torch.float64)
    sum_g = torch.zeros(num_groups, dtype=torch.float64, device=r.device).index_add_(0, inv, r)
    mean_g = sum_g / n_g
    dev = r - mean_g[inv]
    m2_g = torch.zeros_like(sum_g).index_add_(0, inv, dev * dev)  # Σ (r - mean)^2 per group
    n = n_g[inv]

    # Exact distinct-value bookkeeping: number of distinct rewards per group, multiplicity of each row's value.
    pairs = torch.stack([inv.to(torch.float64), r], dim=1)
    uniq, pair_inv, pair_counts = torch.unique(pairs, dim=0, return_inverse=True, return_counts=True)
    distinct = torch.bincount(uniq[:, 0].long(), minlength=num_groups)[inv]
    multiplicity = pair_counts[pair_inv]
    gmin = torch.full_like(sum_g, float("inf")).scatter_reduce(0, inv, r, reduce="amin")[inv]
    gmax = torch.full_like(sum_g, float("-inf")).scatter_reduce(0, inv, r, reduce="amax")[inv]

    if not leave_one_out:
        baseline = mean_g[inv]
        std = torch.sqrt(m2_g[inv] / (n - 1).clamp(min=1))
        trivial = distinct == 1  # includes groups of one
        return torch.where(trivial, r, baseline), torch.where(trivial, torch.zeros_like(std), std)

    peers = n - 1
    baseline = torch.where(peers > 0, (sum_g[inv] - r) / peers.clamp(min=1), r)
    # Removing row i from a group changes Σ(r - mean)^2 by n/(n-1)·(r_i - mean)^2 (exact downdate).
    m2_peers = (m2_g[inv] - dev * dev * n / peers.clamp(min=1)).clamp(min=0)
    std = torch.sqrt(m2_peers / (peers - 1).clamp(min=1))
    std = torch.where(peers >= 2, std, torch.zeros_like(std))
    # Peers all equal: the group has one value, or two values and row i is the only holder of its own.
    single_value = distinct == 1
    odd_one_out = (distinct == 2) & (multiplicity == 1)
    peer_value = torch.where(single_value, r, torch.where(r == gmax, gmin, gmax))
    trivial = single_value | odd_one_out
    return torch.where(trivial, peer_value, baseline), torch.where(trivial, torch.zeros_like(std), std)


def _output_dtype(rewards: torch.Tensor) -> torch.dtype:
    return rewards.dtype if rewards.is_floating_point() else torch.get_default_dtype()


def group_baseline_and_std(
    rewards: torch.Tensor, group_ids: torch.Tensor, *, leave_one_out: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row group baseline and std, ``([B], [B])`` in the dtype of ``rewards``.

    Used by the estimator, by dynamic sampling (rows with ``std == 0`` carry no signal and are dropped; with
    LOO that is only the odd row of a mixed group) and by logging. ``std`` is exactly 0 wherever the reference
    set is all equal, so ``std != 0`` is a safe filter.
    """
    baseline, std = _group_stats64(rewards, group_ids, leave_one_out=leave_one_out)
    out = _output_dtype(rewards)
    return baseline.to(out), std.to(out)


def compute_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    *,
    leave_one_out: bool = True,
    normalize: bool = True,
    clip_low: float | None = None,
    clip_high: float | None = None,
) -> torch.Tensor:
    """GRPO advantage per row, ``[B]`` in the dtype of ``rewards``.

    ``rewards`` float ``[B]``; ``group_ids`` int ``[B]`` (equal ids form a group). ``A = r - b``, divided by
    ``s + 1e-6`` where ``normalize`` and ``s > 0``; then ``A = max(A, clip_low)`` and ``A = min(A, clip_high)``
    (``grpo.advantage_clip_low/high``; clipping is last, after normalisation).
    """
    if clip_low is not None and clip_high is not None and clip_low > clip_high:
        raise ConfigError(
            f"grpo.advantage_clip_low ({clip_low}) is greater than grpo.advantage_clip_high ({clip_high}); "
            "set advantage_clip_low <= advantage_clip_high"
        )
    baseline, std = _group_stats64(rewards, group_ids, leave_one_out=leave_one_out)
    adv = rewards.detach().to(torch.float64) - baseline
    if normalize:
        adv = torch.where(std > 0, adv / (std + NORMALIZE_EPSILON), adv)
    if clip_low is not None:
        adv = adv.clamp(min=clip_low)
    if clip_high is not None:
        adv = adv.clamp(max=clip_high)
    return adv.to(_output_dtype(rewards))


def _broadcast(adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[B] -> [B, S]``: one advantage per sequence, repeated on every token (the loss applies the mask)."""
    if mask.dim() != 2 or mask.shape[0] != adv.shape[0]:
        raise ValueError(f"mask must be [B, S] with B={adv.shape[0]}, got {tuple(mask.shape)}")
    return adv.unsqueeze(-1).expand(mask.shape).contiguous()


@register_advantage_estimator("grpo")
class GRPOAdvantageEstimator:
    """``grpo``: group-relative advantage (module docstring), broadcast to ``[B, S]``.

    Config keys (``grpo.adv_estimator``): ``normalize_rewards`` (default True), ``use_leave_one_out_baseline``
    (default True) — upstream NeMo-RL's code defaults, which apply when the block is absent.
    """

    def __init__(self, *, normalize_rewards: bool = True, use_leave_one_out_baseline: bool = True):
        self.normalize_rewards = normalize_rewards
        self.use_leave_one_out_baseline = use_leave_one_out_baseline

    @classmethod
    def from_config(cls, adv_config: Mapping[str, Any], loss_config: Mapping[str, Any]) -> GRPOAdvantageEstimator:
        return cls(
            normalize_rewards=bool(adv_config["normalize_rewards"]),
            use_leave_one_out_baseline=bool(adv_config["use_leave_one_out_baseline"]),
        )

    def __call__(
        self,
        rewards: torch.Tensor,
        group_ids: torch.Tensor,
        mask: torch.Tensor,
        *,
        prev_logprobs: torch.Tensor | None = None,
        reference_logprobs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Advantages ``[B, S]`` from ``rewards [B]``, ``group_ids [B]``; ``mask [B, S]`` only gives the shape."""
        adv = compute_advantages(
            rewards,
            group_ids,
            leave_one_out=self.use_leave_one_out_baseline,
            normalize=self.normalize_rewards,
        )
        return _broadcast(adv, mask)


@register_advantage_estimator("reinforce_plus_plus")
class ReinforcePlusPlusAdvantageEstimator:
    """``reinforce_plus_plus``: ``A = r - mean_group(r)`` (no LOO; plain ``r`` without ``minus_baseline``),
    broadcast to ``[B, S]``, optionally minus ``β·KL_t(prev, ref)`` per token (``loss_fn.use_kl_in_reward``),
    then whitened over the masked tokens of the whole batch: ``(A - μ) / sqrt(max(σ², 1e-8))`` with the
    population (biased) masked variance.
    """

    def __init__(
        self,
        *,
        minus_baseline: bool = True,
        use_kl_in_reward: bool = False,
        kl_penalty: float = 0.01,
        kl_type: str = "k3",
        kl_input_clamp_value: float | None = None,
        kl_output_clamp_value: float | None = None,
    ):
        self.minus_baseline = minus_baseline
        self.use_kl_in_reward = use_kl_in_reward
        self.kl_penalty = kl_penalty
        self.kl_fn = get_kl_estimator(kl_type)
        self.kl_input_clamp_value = kl_input_clamp_value
        self.kl_output_clamp_value = kl_output_clamp_value

    @classmethod
    def from_config(
        cls, adv_config: Mapping[str, Any], loss_config: Mapping[str, Any]
    ) -> ReinforcePlusPlusAdvantageEstimator:
        """``loss_config`` (``loss_fn``) supplies the KL settings folded into the reward."""
        return cls(
            minus_baseline=bool(adv_config["minus_baseline"]),
            use_kl_in_reward=bool(loss_config["use_kl_in_reward"]),
            kl_penalty=float(loss_config["reference_policy_kl_penalty"]),
            kl_type=loss_config["reference_policy_kl_type"],
            kl_input_clamp_value=loss_config["kl_input_clamp_value"],
            kl_output_clamp_value=loss_config["kl_output_clamp_value"],
        )

    def __call__(
        self,
        rewards: torch.Tensor,
        group_ids: torch.Tensor,
        mask: torch.Tensor,
        *,
        prev_logprobs: torch.Tensor | None = None,
        reference_logprobs: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Whitened advantages ``[B, S]``; ``mask [B, S]`` (token_mask·sample_mask) selects the whitening set."""
        if self.minus_baseline:
            baseline, _ = _group_stats64(rewards, group_ids, leave_one_out=False)
            adv = rewards.detach().to(torch.float64) - baseline
        else:
            _check_inputs(rewards, group_ids)
            adv = rewards.detach().to(torch.float64)
        adv = _broadcast(adv, mask)
        if self.use_kl_in_reward:
            if prev_logprobs is None or reference_logprobs is None:
                raise ValueError("use_kl_in_reward needs prev_logprobs and reference_logprobs")
            logr = (reference_logprobs - prev_logprobs).detach().to(torch.float64)
            if self.kl_input_clamp_value is not None:
                logr = logr.clamp(-self.kl_input_clamp_value, self.kl_input_clamp_value)
            kl = self.kl_fn(logr)
            if self.kl_output_clamp_value is not None:
                kl = kl.clamp(-self.kl_output_clamp_value, self.kl_output_clamp_value)
            adv = adv - self.kl_penalty * kl
        m = mask.to(torch.float64)
        count = m.sum().clamp(min=1)
        mean = (adv * m).sum() / count
        var = ((adv - mean) ** 2 * m).sum() / count
        return ((adv - mean) * var.clamp(min=1e-8).rsqrt()).to(_output_dtype(rewards))


def get_advantage_estimator(name: str) -> type:
    """The estimator class registered under ``name`` (``grpo.adv_estimator.name``)."""
    try:
        return ADVANTAGE_ESTIMATORS[name]
    except (KeyError, TypeError):
        raise unknown_estimator(name, sorted(ADVANTAGE_ESTIMATORS)) from None


def build_advantage_estimator(
    adv_config: Mapping[str, Any] | None, loss_config: Mapping[str, Any] | None = None
) -> AdvantageEstimator:
    """Build the estimator named by a ``grpo.adv_estimator`` block; missing keys take the schema's defaults.

    ``loss_config`` (``loss_fn``) supplies the KL settings that ``reinforce_plus_plus`` folds into the reward.
    """
    cfg, loss = complete_sections(adv_config, loss_config)
    return get_advantage_estimator(cfg["name"]).from_config(cfg, loss)
