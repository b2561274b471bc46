r"""The clipped policy-gradient loss of GRPO (``loss_fn.*``), computed per micro-batch.

Notation, all ``[B, S]`` and already aligned (position t is the log-prob of token t; nothing is shifted here):
``lp`` current log-probs (with grad), ``lp_old`` = ``prev_logprobs``, ``lp_gen`` = ``generation_logprobs``,
``lp_ref`` = ``reference_policy_logprobs``, ``A`` = ``advantages``, ``m_t = token_mask_t · sample_mask_i``.
``N_tok``/``N_seq`` are the valid tokens/sequences of the whole *global* batch, so micro-batch losses add up to the
global-batch loss and the summed gradient does not depend on how the batch was split.

Objective (minimised)::

    L = Red_t[ w_t · ℓ_t ] + β · Red_t[ κ_t ] + μ · Red_t[ -lp_t · 1(reward_i > 0) ]

* ratio ``r_t = exp(lp - lp_old)``, ``r̄_t = clamp(r_t, 1 - ε_low, 1 + ε_high)``
  (``ratio_clip_min`` = ε_low, ``ratio_clip_max`` = ε_high);
  ``sequence_level_importance_ratios`` (GSPO): ``r_i = exp(Σ_t tm·(lp - lp_old) / Σ_t tm)`` on every token;
  ``force_on_policy_ratio``: ``lp_old := sg(lp)`` so ``r ≡ 1`` with gradient ∇lp, and no clipping;
  ``disable_ppo_ratio`` (REINFORCE/RLOO): ``r := r̄ := lp``.
* per-token loss ``ℓ_t = max(-A·r, -A·r̄)``; ``use_cispo``: ``ℓ_t = -A·sg(r̄)·lp``;
  ``ratio_clip_c = c > 1`` (dual clip): where ``A < 0``, ``ℓ_t = min(ℓ_t, -A·c)``.
* IS weight ``w`` (``use_importance_sampling_correction``, else 1), detached, non-finite → 0:
  token level ``w_t = exp(lp_old - lp_gen)``; GSPO ``w_i = exp(Σ_t m_t·(lp_old - lp_gen))`` (a sum, not a mean).
  ``truncated_importance_sampling_type`` with bounds [``_ratio_min``, ``_ratio``]: ``tis`` clamps w (min defaults
  to 0); ``icepop`` zeroes w outside the bounds; ``seq-mask-tis`` zeroes whole rows whose geometric mean
  ``exp(mean_tm(lp_old - lp_gen))`` is outside the bounds and keeps raw token weights elsewhere.
* KL (``reference_policy_kl_penalty`` = β ≠ 0 and not ``use_kl_in_reward``): ``logr = clamp(lp_ref - lp, ±in)``
  (``kl_input_clamp_value``); ``k`` = ``reference_policy_kl_type``: k1 ``-logr``, k2 ``logr²/2``,
  k3 ``exp(logr) - 1 - logr``; weight ``ω = exp(lp - sg(lp))`` (value 1, adds the score-function term k·∇lp) or,
  with ``use_on_policy_kl_approximation``, ``ω = exp(lp - lp_gen)``; ω is detached where the input clamp is
  active; ``κ_t = clamp(ω·k, ±out)`` (``kl_output_clamp_value``), β outside the clamp (HEAD semantics).
* ``Red``: ``token_level_loss`` (default) ``Σ_{i,t} m·x / (N_tok + 1e-8)``; otherwise (sequence level, original
  GRPO) ``Σ_i sample_mask_i · (Σ_t tm·x / (Σ_t tm + 1e-8)) / (N_seq + 1e-8)``.
* ``positive_example_nll_weight`` = μ (VAPO): needs ``data["rewards"] [B]``; reduced with the same ``Red`` (upstream
  divides by the micro-batch's own correct-token count, which would break micro-batch invariance).

Metrics are python floats, pre-divided by the global counts, so the policy folds micro-batches, optimizer steps and
ranks as :mod:`rlvr.policy.train_metrics` declares: keys ending in ``_min`` are min-ed, ``_max`` max-ed, all
others summed over micro-batches and ranks.
Summed keys: ``loss, actor_loss, kl_penalty (= Red[κ], without β), positive_nll_loss`` (normalised like the loss);
``probs_ratio, probs_ratio_clamped, token_mult_prob_error, gen_kl_error, policy_kl_error, js_divergence_error,
approx_entropy`` (÷ N_tok); ``sampling_importance_ratio`` (÷ N_seq for GSPO, else ÷ N_tok); ``is_oob_ratio`` (only
with truncation; ÷ N_seq for seq-mask-tis, else ÷ N_tok); ``num_valid_samples`` (a count).
Min/max keys: ``probs_ratio_min/max``, ``probs_ratio_clamped_min/max`` (±inf when a micro-batch has no tokens).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch

from rlvr.errors import ConfigError
from rlvr.grpo.loss_config import ClippedPGLossConfig, check_kl_type  # torch-free: the config checks use it

EPS = 1e-8


def masked_mean(
    x: torch.Tensor, mask: torch.Tensor, denom: torch.Tensor | float | None = None, dim: int | None = None
) -> torch.Tensor:
    """``Σ x·mask / (denom + 1e-8)``; ``denom`` defaults to ``Σ mask`` (over ``dim``, or everything)."""
    total = (x * mask).sum() if dim is None else (x * mask).sum(dim)
    if denom is None:
        denom = mask.sum() if dim is None else mask.sum(dim)
    return total / (denom + EPS)


# --- KL estimators of KL(π || π_ref) from logr = lp_ref - lp at tokens sampled from π (Schulman's k1/k2/k3) ---
KL_ESTIMATORS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "k1": lambda logr: -logr,
    "k2": lambda logr: 0.5 * logr * logr,
    "k3": lambda logr: torch.exp(logr) - 1.0 - logr,
}


def get_kl_estimator(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-token KL estimator ``k(logr)`` named ``loss_fn.reference_policy_kl_type``."""
    check_kl_type(name)
    return KL_ESTIMATORS[name]


def _finite_exp(x: torch.Tensor) -> torch.Tensor:
    """``exp(x)`` with NaN/±inf results replaced by 0, without NaN gradients leaking from those positions."""
    with torch.no_grad():
        ok = torch.isfinite(torch.exp(x))
    safe = torch.where(ok, x, torch.zeros_like(x))
    return torch.where(ok, torch.exp(safe), torch.zeros_like(x))


def compute_kl(
    logprobs: torch.Tensor,
    reference_logprobs: torch.Tensor,
    *,
    kl_type: str = "k3",
    input_clamp: float | None = None,
    output_clamp: float | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token ``clamp(ω·k(clamp(lp_ref - lp, ±input_clamp)), ±output_clamp)``, ``[B, S]``.

    ``ω`` (``weights``, default 1) is detached where the input clamp is active: there ``k`` no longer depends on
    ``lp`` and the score-function term would push on a value the clamp has frozen.
    """
    logr = reference_logprobs - logprobs
    if input_clamp is not None:
        clamped = logr.abs() > input_clamp
        logr = logr.clamp(-input_clamp, input_clamp)
        if weights is not None:
            weights = torch.where(clamped, weights.detach(), weights)
    k = get_kl_estimator(kl_type)(logr)
    if weights is not None:
        k = weights * k
    if output_clamp is not None:
        k = k.clamp(-output_clamp, output_clamp)
    return k


# --- Truncated importance sampling. Arguments: IS weights w [B, S], log IS ratio lp_old - lp_gen [B, S],
# token_mask [B, S], bounds lo/hi. Returns (truncated w, out-of-bounds indicator, what it counts).
Truncation = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float | None, float], tuple]


def _truncate_tis(w: torch.Tensor, log_ratio: torch.Tensor, tm: torch.Tensor, lo: float | None, hi: float) -> tuple:
    lo = 0.0 if lo is None else lo
    return w.clamp(min=lo, max=hi), (w < lo) | (w > hi), "token"


def _truncate_icepop(w: torch.Tensor, log_ratio: torch.Tensor, tm: torch.Tensor, lo: float | None, hi: float) -> tuple:
    keep = (w >= lo) & (w <= hi)
    return torch.where(keep, w, torch.zeros_like(w)), ~keep, "token"


def _truncate_seq_mask_tis(
    w: torch.Tensor, log_ratio: torch.Tensor, tm: torch.Tensor, lo: float | None, hi: float
) -> tuple:
    # Row gate on the geometric-mean ratio; the kept rows keep their raw (untruncated) token weights.
    geo = torch.exp(masked_mean(torch.nan_to_num(log_ratio, nan=0.0, posinf=0.0, neginf=0.0), tm, dim=-1))
    keep = (geo >= lo) & (geo <= hi)  # [B]
    return w * keep.unsqueeze(-1).to(w.dtype), ~keep, "sequence"


TRUNCATIONS: dict[str, Truncation] = {
    "tis": _truncate_tis,
    "icepop": _truncate_icepop,
    "seq-mask-tis": _truncate_seq_mask_tis,
}


_REQUIRED = ("prev_logprobs", "generation_logprobs", "reference_policy_logprobs", "advantages", "token_mask")


class ClippedPGLoss:
    """Callable loss: ``loss, metrics = fn(logprobs [B,S], data, global_valid_seqs, global_valid_toks)``.

    The objective and every flag are documented in the module docstring.
    """

    def __init__(self, loss_fn_config: Mapping[str, Any] | None = None):
        self.config = ClippedPGLossConfig.from_dict(loss_fn_config)
        c = self.config
        self.token_level = c.token_level_loss
        self.kl_beta = 0.0 if c.use_kl_in_reward else c.reference_policy_kl_penalty
        self.truncate = TRUNCATIONS.get(c.truncated_importance_sampling_type or "")

    def __call__(
        self,
        logprobs: torch.Tensor,
        data: Mapping[str, torch.Tensor],
        global_valid_seqs: torch.Tensor | float,
        global_valid_toks: torch.Tensor | float,
        *,
        unfiltered_logprobs: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Micro-batch loss (0-d, pre-divided by the global counts) and its metrics.

        ``unfiltered_logprobs`` ``[B, S]``: current log-probs without top-k/top-p filtering, used only by the KL
        term (the reference pass is unfiltered); defaults to ``logprobs``.
        """
        c = self.config
        t = self._inputs(logprobs, data)
        lp, tm, sm, mask = t["lp"], t["tm"], t["sm"], t["mask"]
        n_tok = torch.as_tensor(global_valid_toks, dtype=lp.dtype, device=lp.device)
        n_seq = torch.as_tensor(global_valid_seqs, dtype=lp.dtype, device=lp.device)
        lp_old = lp.detach() if c.force_on_policy_ratio else t["prev_logprobs"]
        lp_gen = t["generation_logprobs"]

        def reduce(x: torch.Tensor) -> torch.Tensor:
            if self.token_level:
                return masked_mean(x, mask, n_tok)
            return masked_mean(masked_mean(x, tm, dim=-1), sm, n_seq)

        metrics = self._mismatch_metrics(lp_old.detach(), lp_gen, mask, n_tok)
        ratio, ratio_clamped = self._ratios(lp, lp_old, tm)
        per_token = self._per_token_loss(t["advantages"], ratio, ratio_clamped, lp)
        weights, is_metrics = self._importance_weights(lp_old.detach(), lp_gen, tm, sm, mask, n_tok, n_seq)
        actor = reduce((weights if c.use_importance_sampling_correction else 1.0) * per_token)

        zero = torch.zeros((), dtype=lp.dtype, device=lp.device)
        kl_value = zero if self.kl_beta == 0 else reduce(self._kl_per_token(lp, t, unfiltered_logprobs))
        nll = zero if c.positive_example_nll_weight == 0 else reduce(-lp * self._correct_rows(data, lp))

        loss = actor + self.kl_beta * kl_value + c.positive_example_nll_weight * nll
        metrics.update(self._ratio_metrics(ratio.detach(), ratio_clamped.detach(), mask, n_tok))
        metrics.update(is_metrics)
        metrics.update(
            loss=float(loss.detach()),
            actor_loss=float(actor.detach()),
            kl_penalty=float(kl_value.detach()),
            positive_nll_loss=float(nll.detach()),
            num_valid_samples=float(sm.sum()),
            approx_entropy=float(-masked_mean(torch.exp(lp.detach() - lp_gen) * lp.detach(), mask, n_tok)),
        )
        return loss, metrics

    def _kl_per_token(
        self, lp: torch.Tensor, t: Mapping[str, torch.Tensor], unfiltered: torch.Tensor | None
    ) -> torch.Tensor:
        """``κ_t`` ``[B, S]`` (module docstring): weighted, clamped KL estimate against the reference policy."""
        c = self.config
        lp_u = lp if unfiltered is None else unfiltered.to(lp.dtype)
        # ω = exp(lp - sg(lp)) has value 1 and contributes the score-function gradient k·∇lp.
        anchor = t["generation_logprobs"] if c.use_on_policy_kl_approximation else lp_u.detach()
        return compute_kl(
            lp_u,
            t["reference_policy_logprobs"],
            kl_type=c.reference_policy_kl_type,
            input_clamp=c.kl_input_clamp_value,
            output_clamp=c.kl_output_clamp_value,
            weights=_finite_exp(lp_u - anchor),
        )

    def _correct_rows(self, data: Mapping[str, torch.Tensor], lp: torch.Tensor) -> torch.Tensor:
        """``[B, 1]`` indicator of rows with reward > 0, for the positive-example NLL term."""
        if "rewards" not in data:
            raise ConfigError(
                f"loss_fn.positive_example_nll_weight={self.config.positive_example_nll_weight} needs per-sample "
                "'rewards' in the training batch; pass them or set the weight to 0"
            )
        return (data["rewards"].to(lp.device) > 0).to(lp.dtype).unsqueeze(-1)

    def _inputs(self, logprobs: torch.Tensor, data: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Check presence and shapes; cast everything to (at least) float32 on the device of ``logprobs``."""
        missing = [k for k in (*_REQUIRED, "sample_mask") if k not in data]
        if missing:
            raise KeyError(f"ClippedPGLoss: data lacks {missing}")
        if logprobs.dim() != 2:
            raise ValueError(f"logprobs must be [B, S], got {tuple(logprobs.shape)}")
        dtype = torch.promote_types(logprobs.dtype, torch.float32)
        out = {"lp": logprobs.to(dtype)}
        for key in _REQUIRED:
            if data[key].shape != logprobs.shape:
                raise ValueError(f"data[{key!r}] is {tuple(data[key].shape)}, expected {tuple(logprobs.shape)}")
            out[key] = data[key].to(device=logprobs.device, dtype=dtype).detach()
        sample_mask = data["sample_mask"]
        if sample_mask.shape != logprobs.shape[:1]:
            raise ValueError(f"data['sample_mask'] must be [{logprobs.shape[0]}], got {tuple(sample_mask.shape)}")
        out["tm"] = out.pop("token_mask")
        out["sm"] = sample_mask.to(device=logprobs.device, dtype=dtype)
        out["mask"] = out["tm"] * out["sm"].unsqueeze(-1)
        return out

    def _ratios(self, lp: torch.Tensor, lp_old: torch.Tensor, tm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(r, r̄)`` ``[B, S]`` for the selected variant (module docstring)."""
        c = self.config
        if c.disable_ppo_ratio:
            return lp, lp
        log_ratio = lp - lp_old
        if c.sequence_level_importance_ratios:
            log_ratio = masked_mean(log_ratio, tm, dim=-1).unsqueeze(-1).expand_as(lp)
        ratio = torch.exp(log_ratio)
        if c.force_on_policy_ratio:
            return ratio, ratio
        return ratio, ratio.clamp(1.0 - c.ratio_clip_min, 1.0 + c.ratio_clip_max)

    def _per_token_loss(
        self, adv: torch.Tensor, ratio: torch.Tensor, ratio_clamped: torch.Tensor, lp: torch.Tensor
    ) -> torch.Tensor:
        """``ℓ_t`` ``[B, S]``: pessimistic PPO clip (or CISPO), then the dual clip for negative advantages."""
        c = self.config
        if c.use_cispo:
            loss = -adv * ratio_clamped.detach() * lp
        else:
            loss = torch.maximum(-adv * ratio, -adv * ratio_clamped)
        if c.ratio_clip_c is not None:
            loss = torch.where(adv < 0, torch.minimum(loss, -adv * c.ratio_clip_c), loss)
        return loss

    def _importance_weights(self, lp_old, lp_gen, tm, sm, mask, n_tok, n_seq) -> tuple[torch.Tensor, dict]:
        """Detached actor IS weights ``[B, S]`` (truncated if configured) and their metrics."""
        c = self.config
        log_ratio = lp_old - lp_gen
        if c.sequence_level_importance_ratios:
            w = _finite_exp((log_ratio * mask).sum(-1, keepdim=True)).expand_as(lp_old)
        else:
            w = _finite_exp(log_ratio)
        metrics: dict[str, float] = {}
        if self.truncate is not None:
            w, oob, unit = self.truncate(
                w, log_ratio, tm, c.truncated_importance_sampling_ratio_min, c.truncated_importance_sampling_ratio
            )
            oob = oob.to(w.dtype)
            frac = masked_mean(oob, sm, n_seq) if unit == "sequence" else masked_mean(oob, mask, n_tok)
            metrics["is_oob_ratio"] = float(frac)
        if c.sequence_level_importance_ratios:
            metrics["sampling_importance_ratio"] = float(masked_mean(w[:, 0], sm, n_seq))
        else:
            metrics["sampling_importance_ratio"] = float(masked_mean(w, mask, n_tok))
        return w.detach(), metrics

    def _mismatch_metrics(self, lp_old, lp_gen, mask, n_tok) -> dict[str, float]:
        """Trainer-vs-sampler log-prob agreement diagnostics (healthy: error ≈ 1, KLs ≈ 0)."""
        kl_type = self.config.reference_policy_kl_type
        # JSD: k3-style estimate of each token's KL to the mixture M = (P_old + P_gen)/2, averaged.
        log_mix = torch.logaddexp(lp_old, lp_gen) - math.log(2.0)
        k3 = KL_ESTIMATORS["k3"]
        jsd = 0.5 * k3(lp_old - log_mix) + 0.5 * k3(lp_gen - log_mix)
        return {
            "token_mult_prob_error": float(masked_mean(torch.exp((lp_gen - lp_old).abs() * mask), mask, n_tok)),
            "gen_kl_error": float(masked_mean(compute_kl(lp_gen, lp_old, kl_type=kl_type), mask, n_tok)),
            "policy_kl_error": float(masked_mean(compute_kl(lp_old, lp_gen, kl_type=kl_type), mask, n_tok)),
            "js_divergence_error": float(masked_mean(jsd, mask, n_tok)),
        }

    @staticmethod
    def _ratio_metrics(ratio, ratio_clamped, mask, n_tok) -> dict[str, float]:
        sel = mask > 0
        out = {
            "probs_ratio": float(masked_mean(ratio, mask, n_tok)),
            "probs_ratio_clamped": float(masked_mean(ratio_clamped, mask, n_tok)),
        }
        for name, x in (("probs_ratio", ratio), ("probs_ratio_clamped", ratio_clamped)):
            picked = x[sel]
            out[f"{name}_min"] = float(picked.min()) if picked.numel() else math.inf
            out[f"{name}_max"] = float(picked.max()) if picked.numel() else -math.inf
        return out
