"""Cross-field checks that a JSON Schema cannot express, run before any compute.

Each failure is a :class:`ConfigError` carrying the manifest's error name where one applies
(``rollout_batch_not_divisible``, ``mixed_nemo_gym_and_upstream_config``) and saying how to fix it. Upstream
NeMo-RL discovers several of these only mid-run (the force_on_policy_ratio assertion at setup, the validation
size ``None // 256`` TypeError at the first validation, the silently diverging ``adv_estimator`` flags); here
they are refused up front.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rlvr.errors import ConfigError

Check = Callable[[dict[str, Any]], None]


def _data_entry(cfg: dict, split: str) -> dict | None:
    """A data entry with ``data.default`` filling its missing keys, as NeMo-RL merges them."""
    entry = cfg["data"].get(split)
    if entry is None:
        return None
    merged = dict(cfg["data"].get("default") or {})
    merged.update({k: v for k, v in entry.items() if v is not None or k not in merged})
    return merged


def data_parallel_workers(cluster: dict) -> int:
    """Policy workers: one per GPU on a GPU run, ``cluster.num_workers`` processes on a CPU run."""
    if cluster["gpus_per_node"] > 0:
        return cluster["gpus_per_node"] * cluster["num_nodes"]
    return cluster.get("num_workers", 1) * cluster["num_nodes"]


def check_batch_arithmetic(cfg: dict) -> None:
    grpo, policy, loss = cfg["grpo"], cfg["policy"], cfg.get("loss_fn", {})
    prompts, gens = grpo["num_prompts_per_step"], grpo["num_generations_per_prompt"]
    rollout, gbs, mbs = prompts * gens, policy["train_global_batch_size"], policy["train_micro_batch_size"]
    code = "rollout_batch_not_divisible"
    if rollout % gbs:
        raise ConfigError(
            f"grpo.num_prompts_per_step x grpo.num_generations_per_prompt = {prompts} x {gens} = {rollout} rows is "
            f"not a multiple of policy.train_global_batch_size = {gbs}; change one of them", code=code)
    if loss.get("force_on_policy_ratio") and rollout != gbs:
        raise ConfigError(
            f"loss_fn.force_on_policy_ratio=true needs exactly one optimizer step per GRPO step, i.e. "
            f"policy.train_global_batch_size == {prompts} x {gens} = {rollout} (it is {gbs}); set "
            f"policy.train_global_batch_size={rollout} or loss_fn.force_on_policy_ratio=false", code=code)
    if gbs % mbs:
        raise ConfigError(f"policy.train_global_batch_size = {gbs} is not a multiple of "
                          f"policy.train_micro_batch_size = {mbs}", code=code)
    workers = data_parallel_workers(cfg["cluster"])
    if gbs % workers:
        raise ConfigError(f"policy.train_global_batch_size = {gbs} must split evenly over the {workers} data-parallel "
                          f"policy workers of cluster.*", code=code)
    if not grpo.get("use_dynamic_sampling", False) and grpo.get("batch_multiplier", 1.0) != 1.0:
        raise ConfigError("grpo.batch_multiplier only applies with grpo.use_dynamic_sampling=true; set it to 1.0")


def check_validation_sizes(cfg: dict) -> None:
    grpo = cfg["grpo"]
    validates = grpo.get("val_period", 0) > 0 or grpo.get("val_at_start") or grpo.get("val_at_end")
    if not validates:
        return
    max_val, batch = grpo.get("max_val_samples"), grpo.get("val_batch_size")
    if cfg["env"].get("should_use_nemo_gym"):
        if max_val is not None:
            raise ConfigError("the NeMo-Gym path validates on the whole validation set, as upstream: set "
                              "grpo.max_val_samples=null")
        return
    if max_val is not None and batch is not None:
        if max_val < batch:
            raise ConfigError(
                f"grpo.max_val_samples = {max_val} is smaller than grpo.val_batch_size = {batch}: no validation "
                f"batch would run (upstream crashes here); lower val_batch_size or raise max_val_samples")
        if max_val % batch:
            raise ConfigError(
                f"grpo.max_val_samples = {max_val} is not a multiple of grpo.val_batch_size = {batch}; only "
                f"{max_val // batch * batch} prompts would be validated; make it a multiple")


def check_nemo_gym_consistency(cfg: dict) -> None:
    gym = bool(cfg["env"].get("should_use_nemo_gym"))
    code = "mixed_nemo_gym_and_upstream_config"
    for split in ("train", "validation"):
        entry = _data_entry(cfg, split)
        if entry is None:
            continue
        env_name = entry.get("env_name") or "math"
        if gym and env_name != "nemo_gym":
            raise ConfigError(f"env.should_use_nemo_gym=true but data.{split} has env_name '{env_name}': NeMo-Gym "
                              f"runs need NeMo-Gym rows (env_name: nemo_gym); start from -c nemo_gym", code=code)
        if not gym and env_name == "nemo_gym":
            raise ConfigError(f"data.{split} holds NeMo-Gym rows (env_name: nemo_gym) but env.should_use_nemo_gym "
                              f"is false; set env.should_use_nemo_gym=true or use -c nemo_gym", code=code)
    if gym:
        generation = cfg["policy"]["generation"]
        for key in ("stop_token_ids", "stop_strings", "top_k"):
            if generation.get(key) is not None:
                raise ConfigError(f"the NeMo-Gym path requires policy.generation.{key}=null (the agent owns "
                                  f"stopping and sampling filters)", code=code)


def check_advantage_flags(cfg: dict) -> None:
    grpo = cfg["grpo"]
    est = grpo.get("adv_estimator") or {}
    for key in ("normalize_rewards", "use_leave_one_out_baseline"):
        if key in est and est[key] is not None and key in grpo and est[key] != grpo[key]:
            raise ConfigError(
                f"grpo.adv_estimator.{key} = {est[key]} contradicts grpo.{key} = {grpo[key]} (upstream silently "
                f"uses one of them); set them equal or leave grpo.adv_estimator.{key} null")


def check_inputs(cfg: dict) -> None:
    tiny = (cfg.get("tiny") or {}).get("enabled", False)
    if tiny:
        return
    if not cfg["policy"].get("model_name"):
        raise ConfigError("policy.model_name is required: an HF model folder or a checkpoint_megatron folder "
                          "(e.g. policy.model_name=/models/my-sft)")
    train = _data_entry(cfg, "train")
    if not train.get("data_path"):
        raise ConfigError("data.train.data_path is required: data.train.data_path=/path/to/train.jsonl")
    validation = _data_entry(cfg, "validation")
    if validation is None:
        if not train.get("split_validation_size"):
            raise ConfigError("data.validation is null, so data.train.split_validation_size must say how much of "
                              "train to hold out (a fraction < 1 or a row count)")
    elif not validation.get("data_path"):
        raise ConfigError("data.validation.data_path is required (or set data.validation=null and "
                          "data.train.split_validation_size=0.05)")
    for split, entry in (("train", train), ("validation", validation)):
        if entry and entry.get("dataset_name") not in (None, "ResponseDataset", "NemoGymDataset"):
            raise ConfigError(f"data.{split}.dataset_name '{entry['dataset_name']}' names a hub dataset, which "
                              f"rlvr does not download; export it to JSONL and set data.{split}.data_path")


def check_backends(cfg: dict) -> None:
    policy = cfg["policy"]
    dtensor = (policy.get("dtensor_cfg") or {}).get("enabled", False)
    megatron = (policy.get("megatron_cfg") or {}).get("enabled", False)
    if dtensor == megatron:
        raise ConfigError("enable exactly one policy backend: policy.dtensor_cfg.enabled (PyTorch/HF) or "
                          "policy.megatron_cfg.enabled (megatron-core)")
    if policy["generation"].get("backend", "hf") == "vllm" and cfg["cluster"]["gpus_per_node"] == 0:
        raise ConfigError("policy.generation.backend=vllm needs GPUs (cluster.gpus_per_node > 0); use "
                          "policy.generation.backend=hf on a CPU machine")


def check_loss_combinations(cfg: dict) -> None:
    loss = cfg.get("loss_fn", {})
    if loss.get("sequence_level_importance_ratios") and loss.get("token_level_loss", True):
        raise ConfigError("loss_fn.sequence_level_importance_ratios=true (GSPO) needs loss_fn.token_level_loss=false")
    tis = loss.get("truncated_importance_sampling_type")
    if tis is not None:
        if not loss.get("use_importance_sampling_correction"):
            raise ConfigError(f"loss_fn.truncated_importance_sampling_type={tis} needs "
                              f"loss_fn.use_importance_sampling_correction=true")
        if not loss.get("truncated_importance_sampling_ratio"):
            raise ConfigError(f"loss_fn.truncated_importance_sampling_type={tis} needs "
                              f"loss_fn.truncated_importance_sampling_ratio > 0")
        if tis in ("icepop", "seq-mask-tis") and loss.get("truncated_importance_sampling_ratio_min") is None:
            raise ConfigError(f"loss_fn.truncated_importance_sampling_type={tis} needs "
                              f"loss_fn.truncated_importance_sampling_ratio_min")
    if loss.get("use_cispo") and (loss.get("sequence_level_importance_ratios") or loss.get("disable_ppo_ratio")
                                  or not loss.get("token_level_loss", True)):
        raise ConfigError("loss_fn.use_cispo=true is token-level only and excludes sequence_level_importance_ratios "
                          "and disable_ppo_ratio")


def check_lora(cfg: dict) -> None:
    """policy.dtensor_cfg.lora_cfg: its values, and the backends LoRA runs on (see rlvr/policy/lora.py)."""
    from rlvr.policy.lora import check_lora_config

    check_lora_config(cfg)


def check_tiny(cfg: dict) -> None:
    """The tiny section's own cross-field rules (e.g. SFT warm-up shorter than the run), before any compute."""
    tiny = dict(cfg.get("tiny") or {})
    if tiny.pop("enabled", False):
        from rlvr.tiny.config import TinyConfig

        TinyConfig.from_dict(tiny)


RLVR_CHECKS: list[Check] = [check_tiny, check_inputs, check_batch_arithmetic, check_validation_sizes,
                            check_nemo_gym_consistency, check_advantage_flags, check_backends,
                            check_loss_combinations, check_lora]


def check_rl_prep(cfg: dict) -> None:
    train = _data_entry(cfg, "train")
    if not train.get("data_path"):
        raise ConfigError("data.train.data_path is required: data.train.data_path=/path/to/train.jsonl")
    if _data_entry(cfg, "validation") is None and not train.get("split_validation_size"):
        raise ConfigError("data.validation is null, so data.train.split_validation_size must be set")


def check_hf_to_megatron(cfg: dict) -> None:
    if not cfg.get("hf_model_id"):
        raise ConfigError("hf_model_id is required: hf_model_id=/path/to/hf_model_folder")


def check_megatron_to_hf(cfg: dict) -> None:
    if not cfg.get("megatron_path"):
        raise ConfigError("megatron_path is required: megatron_path=/path/to/checkpoint_megatron (root or iter_*)")


CHECKS: dict[str, list[Check]] = {
    "rl/nemo_rl/rlvr": RLVR_CHECKS,
    "data_prep/rl_prep": [check_rl_prep],
    "convert/hf_to_megatron": [check_hf_to_megatron],
    "convert/megatron_to_hf": [check_megatron_to_hf],
}


def run_checks(step_id: str, cfg: dict) -> None:
    for check in CHECKS.get(step_id, []):
        check(cfg)
