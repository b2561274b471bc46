"""Facts derived from a validated step config, decided once here and read by everyone (loader, trainer, workers).

The config is complete when these run: the loader has filled every schema default, so no second default is
taken here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def needs_reference_model(cfg: dict[str, Any]) -> bool:
    """A frozen reference policy is built when the KL weight is > 0, in the loss or in the reward.

    With a zero weight the reference pass is skipped whatever
    ``grpo.skip_reference_policy_logprobs_calculation`` says; a positive weight with the skip switch on is
    refused by the config checks (it would train against zeros).
    """
    return cfg["loss_fn"]["reference_policy_kl_penalty"] > 0


def runtime_requirements(cfg: dict[str, Any]) -> list[str]:
    """What a dry run cannot check but the real run needs, one sentence each (printed with the plan)."""
    notes = []
    model = (cfg.get("policy") or {}).get("model_name")
    if model and not Path(str(model)).expanduser().exists():
        notes.append(
            f"policy.model_name '{model}' is not a local folder: it must be a Hugging Face hub id that "
            f"can be downloaded (or is in the HF cache) when the run starts"
        )
    gym = (cfg.get("env") or {}).get("nemo_gym") or {}
    if (cfg.get("env") or {}).get("should_use_nemo_gym"):
        for i, path in enumerate(gym.get("config_paths") or []):
            if not Path(path).expanduser().exists():
                notes.append(
                    f"env.nemo_gym.config_paths[{i}] '{path}' does not exist here: the run reads it, "
                    f"relative to its working directory, to route agents to servers"
                )
    return notes
