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


def optimizer_steps_per_grpo_step(cfg: dict[str, Any]) -> int:
    """K = rollouts per step / ``policy.train_global_batch_size`` (the checks make it a whole number)."""
    grpo = cfg["grpo"]
    return grpo["num_prompts_per_step"] * grpo["num_generations_per_prompt"] // cfg["policy"]["train_global_batch_size"]


def plan_notes(cfg: dict[str, Any]) -> list[str]:
    """Sentences printed with the plan: where this run departs from what NeMo-RL would do, then what a dry run
    cannot check but the real run needs."""
    return _departures_from_nemo_rl(cfg) + _runtime_requirements(cfg)


def _departures_from_nemo_rl(cfg: dict[str, Any]) -> list[str]:
    if "loss_fn" not in cfg:  # a step without GRPO training (data prep, conversion)
        return []
    steps = optimizer_steps_per_grpo_step(cfg)
    if not (cfg["loss_fn"]["force_on_policy_ratio"] and steps > 1):
        return []
    # Nemotron's shipped default.yaml / nemo_gym.yaml are in this case (12 x 8 and 16 x 8 rollouts, batch 32);
    # NeMo-RL refuses it at set-up. The importance weight exp(lp - lp_gen) (truncated) is what keeps the later
    # mini-batches honest: with it off, the checks refuse the combination.
    return [
        f"loss_fn.force_on_policy_ratio=true with {steps} optimizer steps per GRPO step (NeMo-RL refuses this): "
        f"each mini-batch's PPO ratio is 1, and the drift of mini-batches 2..{steps} from the generating policy is "
        f"corrected by the truncated importance weight (loss_fn.use_importance_sampling_correction); set "
        f"policy.train_global_batch_size={steps * cfg['policy']['train_global_batch_size']} for exactly on-policy "
        f"steps"
    ]


def _runtime_requirements(cfg: dict[str, Any]) -> list[str]:
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
