"""The ``loss_fn`` section as the loss reads it: :class:`ClippedPGLossConfig`, its defaults and its rules.

Apart from :mod:`rlvr.grpo.loss` because it needs no torch: the config checks run it at ``-d`` and when the
Snakefile is parsed, where importing torch would cost more than everything else the plan does. The loss module's
registries (KL estimators, truncations) carry the names declared here; a unit test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from typing import Any

from rlvr.errors import ConfigError

# loss_fn.reference_policy_kl_type: Schulman's estimators, rlvr.grpo.loss.KL_ESTIMATORS.
KL_TYPES = ("k1", "k2", "k3")
# loss_fn.truncated_importance_sampling_type: rlvr.grpo.loss.TRUNCATIONS.
TRUNCATION_TYPES = ("tis", "icepop", "seq-mask-tis")


def check_kl_type(name: Any) -> None:
    """Refuse a ``loss_fn.reference_policy_kl_type`` that names no KL estimator."""
    if name not in KL_TYPES:
        raise ConfigError(f"loss_fn.reference_policy_kl_type: unknown KL type {name!r}; known: {', '.join(KL_TYPES)}")


@dataclasses.dataclass(frozen=True)
class ClippedPGLossConfig:
    """``loss_fn`` keys with their upstream names. Their defaults are the schema's (``schemas/``), the one
    place every reader takes them from; ``from_dict`` fills a missing key from there."""

    reference_policy_kl_penalty: float
    reference_policy_kl_type: str
    kl_input_clamp_value: float | None
    kl_output_clamp_value: float | None
    ratio_clip_min: float
    ratio_clip_max: float
    ratio_clip_c: float | None
    use_on_policy_kl_approximation: bool
    use_importance_sampling_correction: bool
    truncated_importance_sampling_type: str | None
    truncated_importance_sampling_ratio: float | None
    truncated_importance_sampling_ratio_min: float | None
    sequence_level_importance_ratios: bool
    token_level_loss: bool
    force_on_policy_ratio: bool
    use_kl_in_reward: bool
    use_cispo: bool
    disable_ppo_ratio: bool
    positive_example_nll_weight: float

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any] | None) -> ClippedPGLossConfig:
        """Fill the schema's defaults, check key names and types, then the cross-field rules; errors name the key."""
        cfg = dict(cfg or {})
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key, value in cfg.items():
            if key not in fields:
                close = difflib.get_close_matches(str(key), fields, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(fields)}"
                raise ConfigError(f"loss_fn.{key}: unknown key{hint}")
            _check_type(key, value, fields[key].type)
        out = cls(**{**loss_defaults(), **cfg})
        out.validate()
        return out

    def validate(self) -> None:  # noqa: C901  (a flat list of independent rules reads best)
        """Cross-field rules; each violation is a ConfigError naming the offending key."""
        check_kl_type(self.reference_policy_kl_type)
        for key in ("kl_input_clamp_value", "kl_output_clamp_value"):
            if getattr(self, key) is not None and getattr(self, key) <= 0:
                _fail(key, "must be positive or null")
        if not 0 <= self.ratio_clip_min <= 1:
            _fail("ratio_clip_min", "is ε_low and must lie in [0, 1] (0.2 means a lower ratio bound of 0.8)")
        if self.ratio_clip_max < 0:
            _fail("ratio_clip_max", "is ε_high and must be >= 0 (0.28 means an upper ratio bound of 1.28)")
        if self.ratio_clip_c is not None and self.ratio_clip_c <= 1:
            _fail("ratio_clip_c", f"is the dual-clip bound and must exceed 1 (got {self.ratio_clip_c}); or null")
        if self.positive_example_nll_weight < 0:
            _fail("positive_example_nll_weight", "must be >= 0")
        if self.sequence_level_importance_ratios and self.token_level_loss:
            _fail("sequence_level_importance_ratios", "(GSPO) requires token_level_loss: false")
        if self.force_on_policy_ratio and self.disable_ppo_ratio:
            _fail("force_on_policy_ratio", "and disable_ppo_ratio both replace the ratio; enable at most one")
        if self.use_cispo:
            for other in ("disable_ppo_ratio", "force_on_policy_ratio", "sequence_level_importance_ratios"):
                if getattr(self, other):
                    _fail("use_cispo", f"is incompatible with {other}: CISPO needs the token-level π/π_old ratio")
            if self.ratio_clip_c is not None:
                _fail("use_cispo", "is incompatible with dual clipping; set ratio_clip_c: null")
            if not self.token_level_loss:
                _fail("use_cispo", "requires token_level_loss: true")
        self._validate_truncation()

    def _validate_truncation(self) -> None:
        kind, hi, lo = (
            self.truncated_importance_sampling_type,
            self.truncated_importance_sampling_ratio,
            self.truncated_importance_sampling_ratio_min,
        )
        if kind is None:
            for key, value in (("ratio", hi), ("ratio_min", lo)):
                if value is not None:
                    _fail(
                        f"truncated_importance_sampling_{key}",
                        "is set but truncated_importance_sampling_type is null; set the type or null the bound",
                    )
            return
        if kind not in TRUNCATION_TYPES:
            _fail("truncated_importance_sampling_type", f"unknown kind {kind!r}; known: {', '.join(TRUNCATION_TYPES)}")
        if not self.use_importance_sampling_correction:
            _fail("truncated_importance_sampling_type", "requires use_importance_sampling_correction: true")
        if hi is None or hi <= 0:
            _fail("truncated_importance_sampling_ratio", f"must be a positive upper bound when the type is {kind!r}")
        if lo is not None and lo > hi:
            _fail("truncated_importance_sampling_ratio_min", f"({lo}) must be <= the upper bound ({hi})")
        if kind in ("icepop", "seq-mask-tis") and lo is None:
            _fail("truncated_importance_sampling_ratio_min", f"is required when the type is {kind!r}")
        if kind == "seq-mask-tis" and self.sequence_level_importance_ratios:
            _fail("truncated_importance_sampling_type", "seq-mask-tis needs token-level IS weights (no GSPO)")


def loss_defaults() -> dict[str, Any]:
    """The schema's ``loss_fn`` defaults."""
    from rlvr.config.schema import section_defaults  # the config package imports this module lazily

    return section_defaults("rlvr_config.schema.yaml", "loss_fn")


def _fail(key: str, why: str) -> None:
    raise ConfigError(f"loss_fn.{key} {why}")


def _check_type(key: str, value: Any, annotation: str) -> None:
    if value is None and "None" in annotation:
        return
    if annotation.startswith("bool"):
        ok = isinstance(value, bool)
    elif annotation.startswith("float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"loss_fn.{key}: expected {annotation}, got {value!r} ({type(value).__name__})")
