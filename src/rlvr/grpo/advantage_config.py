"""The ``grpo.adv_estimator`` block as the estimators read it: complete sections and the checks they need.

Apart from :mod:`rlvr.grpo.advantages` because it needs no torch: the config checks run it at ``-d`` and when the
Snakefile is parsed. :func:`~rlvr.grpo.advantages.build_advantage_estimator` completes the sections here, then
builds the class registered under the name; :func:`check_estimator_config` refuses, without building it, what
that build of a built-in estimator would refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rlvr.errors import ConfigError
from rlvr.grpo.loss_config import check_kl_type

# The estimators rlvr.grpo.advantages registers (a unit test keeps the two in step).
BUILTIN_ESTIMATORS = ("grpo", "reinforce_plus_plus")
# Upstream names we know but do not implement: choosing one is an error, never a silent fallback.
UNSUPPORTED_ESTIMATORS = ("gdpo", "opd")
ADV_KEYS = {"name", "normalize_rewards", "use_leave_one_out_baseline", "minus_baseline", "reward_weights"}


def unknown_estimator(name: Any, known: list[str]) -> ConfigError:
    extra = " (upstream has it; it is not implemented here)" if name in UNSUPPORTED_ESTIMATORS else ""
    return ConfigError(f"grpo.adv_estimator.name: unknown estimator {name!r}{extra}; known: {', '.join(known)}")


def complete_sections(
    adv_config: Mapping[str, Any] | None, loss_config: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``grpo.adv_estimator`` block and the ``loss_fn`` section with every key, missing ones from the schema.

    A null ``normalize_rewards`` / ``use_leave_one_out_baseline`` takes the schema's default of the top-level grpo
    key (the trainer fills it from the config's own top-level key before calling).
    """
    from rlvr.config.schema import section_defaults  # the config package imports this module lazily

    cfg = dict(adv_config or {})
    unknown = sorted(set(cfg) - ADV_KEYS)
    if unknown:
        raise ConfigError(f"grpo.adv_estimator: unknown key(s) {unknown}; known: {sorted(ADV_KEYS)}")
    grpo_defaults = section_defaults("rlvr_config.schema.yaml", "grpo")
    for key in ("normalize_rewards", "use_leave_one_out_baseline"):
        if cfg.get(key) is None:
            cfg[key] = grpo_defaults[key]
    cfg = {**grpo_defaults["adv_estimator"], **{k: v for k, v in cfg.items() if v is not None}}
    if cfg["reward_weights"] is not None:
        raise ConfigError(
            "grpo.adv_estimator.reward_weights is only read by gdpo, which is not implemented; set it to null"
        )
    loss = {**section_defaults("rlvr_config.schema.yaml", "loss_fn"), **(loss_config or {})}
    return cfg, loss


def check_estimator_config(adv_config: Mapping[str, Any] | None, loss_config: Mapping[str, Any] | None) -> None:
    """What building a built-in estimator from these sections would refuse: the keys, the name, and for
    ``reinforce_plus_plus`` (which folds the KL into the reward) the KL type."""
    cfg, loss = complete_sections(adv_config, loss_config)
    if cfg["name"] not in BUILTIN_ESTIMATORS:
        raise unknown_estimator(cfg["name"], sorted(BUILTIN_ESTIMATORS))
    if cfg["name"] == "reinforce_plus_plus":
        check_kl_type(loss["reference_policy_kl_type"])
