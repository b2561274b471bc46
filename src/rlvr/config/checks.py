"""Cross-field checks that a JSON Schema cannot express, run before any compute.

Each failure is a :class:`ConfigError` carrying the manifest's error name where one applies
(``rollout_batch_not_divisible``, ``mixed_nemo_gym_and_upstream_config``) and saying how to fix it. Upstream
NeMo-RL discovers several of these only mid-run (the force_on_policy_ratio assertion at setup, the validation
size ``None // 256`` TypeError at the first validation, the silently diverging ``adv_estimator`` flags); here
they are refused up front.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
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
    return cluster["num_workers"] * cluster["num_nodes"]


def _training_ranks(cfg: dict) -> int:
    """The placement plan's training ranks (fewer than the devices when generation has its own); a layout the
    plan refuses is reported by the plan itself (at -d and by the rlvr rule), so count every device here."""
    from rlvr.launch.placement import PlacementError, plan_placement

    try:
        return plan_placement(cfg).train_ranks
    except PlacementError:
        return data_parallel_workers(cfg["cluster"])


def check_batch_arithmetic(cfg: dict) -> None:
    grpo, policy, loss = cfg["grpo"], cfg["policy"], cfg["loss_fn"]
    prompts, gens = grpo["num_prompts_per_step"], grpo["num_generations_per_prompt"]
    rollout, gbs, mbs = prompts * gens, policy["train_global_batch_size"], policy["train_micro_batch_size"]
    code = "rollout_batch_not_divisible"
    if rollout % gbs:
        raise ConfigError(
            f"grpo.num_prompts_per_step x grpo.num_generations_per_prompt = {prompts} x {gens} = {rollout} rows is "
            f"not a multiple of policy.train_global_batch_size = {gbs}; change one of them",
            code=code,
        )
    # NeMo-RL asserts one optimizer step per GRPO step here. rlvr also accepts several when the truncated
    # importance weight corrects the drift of the later mini-batches (see config/facts.py::plan_notes); without
    # that correction they would be trained as on-policy although the policy has already moved.
    if loss["force_on_policy_ratio"] and rollout != gbs and not loss["use_importance_sampling_correction"]:
        raise ConfigError(
            f"loss_fn.force_on_policy_ratio=true with {rollout // gbs} optimizer steps per GRPO step "
            f"({prompts} x {gens} = {rollout} rollouts, policy.train_global_batch_size={gbs}) treats the later "
            f"mini-batches as on-policy although the policy has moved; set policy.train_global_batch_size={rollout} "
            f"(one step, exactly on-policy), or loss_fn.use_importance_sampling_correction=true (the drift is "
            f"corrected by the importance weight), or loss_fn.force_on_policy_ratio=false",
            code=code,
        )
    if gbs % mbs:
        raise ConfigError(
            f"policy.train_global_batch_size = {gbs} is not a multiple of policy.train_micro_batch_size = {mbs}",
            code=code,
        )
    workers = _training_ranks(cfg)
    if gbs % workers:
        raise ConfigError(
            f"policy.train_global_batch_size = {gbs} must split evenly over the {workers} data-parallel "
            f"policy workers of cluster.*",
            code=code,
        )
    if not grpo["use_dynamic_sampling"] and grpo["batch_multiplier"] != 1.0:
        raise ConfigError("grpo.batch_multiplier only applies with grpo.use_dynamic_sampling=true; set it to 1.0")


def check_validation_sizes(cfg: dict) -> None:
    grpo = cfg["grpo"]
    validates = grpo["val_period"] > 0 or grpo["val_at_start"] or grpo["val_at_end"]
    if not validates:
        return
    max_val, batch = grpo.get("max_val_samples"), grpo.get("val_batch_size")
    if cfg["env"].get("should_use_nemo_gym"):
        if max_val is not None:
            raise ConfigError(
                "the NeMo-Gym path validates on the whole validation set, as upstream: set grpo.max_val_samples=null"
            )
        return
    if max_val is not None and batch is not None:
        if max_val < batch:
            raise ConfigError(
                f"grpo.max_val_samples = {max_val} is smaller than grpo.val_batch_size = {batch}: no validation "
                f"batch would run (upstream crashes here); lower val_batch_size or raise max_val_samples"
            )
        if max_val % batch:
            raise ConfigError(
                f"grpo.max_val_samples = {max_val} is not a multiple of grpo.val_batch_size = {batch}; only "
                f"{max_val // batch * batch} prompts would be validated; make it a multiple"
            )


def check_nemo_gym_consistency(cfg: dict) -> None:
    gym = bool(cfg["env"].get("should_use_nemo_gym"))
    code = "mixed_nemo_gym_and_upstream_config"
    for split in ("train", "validation"):
        entry = _data_entry(cfg, split)
        if entry is None:
            continue
        env_name = entry.get("env_name") or "math"
        if gym and env_name != "nemo_gym":
            raise ConfigError(
                f"env.should_use_nemo_gym=true but data.{split} has env_name '{env_name}': NeMo-Gym "
                f"runs need NeMo-Gym rows (env_name: nemo_gym); start from -c nemo_gym",
                code=code,
            )
        if not gym and env_name == "nemo_gym":
            raise ConfigError(
                f"data.{split} holds NeMo-Gym rows (env_name: nemo_gym) but env.should_use_nemo_gym "
                f"is false; set env.should_use_nemo_gym=true or use -c nemo_gym",
                code=code,
            )
    if gym:
        generation = cfg["policy"]["generation"]
        for key in ("stop_token_ids", "stop_strings", "top_k"):
            if generation.get(key) is not None:
                raise ConfigError(
                    f"the NeMo-Gym path requires policy.generation.{key}=null (the agent owns "
                    f"stopping and sampling filters)",
                    code=code,
                )


def check_advantage_flags(cfg: dict) -> None:
    grpo = cfg["grpo"]
    est = grpo.get("adv_estimator") or {}
    for key in ("normalize_rewards", "use_leave_one_out_baseline"):
        if key in est and est[key] is not None and key in grpo and est[key] != grpo[key]:
            raise ConfigError(
                f"grpo.adv_estimator.{key} = {est[key]} contradicts grpo.{key} = {grpo[key]} (upstream silently "
                f"uses one of them); set them equal or leave grpo.adv_estimator.{key} null"
            )


def check_inputs(cfg: dict) -> None:
    tiny = (cfg.get("tiny") or {}).get("enabled", False)
    if tiny:
        return
    train, validation = _data_entry(cfg, "train"), _data_entry(cfg, "validation")
    for split, entry in (("train", train), ("validation", validation)):
        # A hub dataset name with a data_path (Nemotron's default.yaml: DAPOMath17K + /path/to/train.jsonl) names
        # where the rows came from; rl_prep reads data_path by env_name. Without a data_path it would need a hub.
        named = entry and entry.get("dataset_name") not in (None, "ResponseDataset", "NemoGymDataset")
        if named and not entry.get("data_path"):
            raise ConfigError(
                f"data.{split}.dataset_name '{entry['dataset_name']}' names a hub dataset, which "
                f"rlvr does not download; export it to JSONL and set data.{split}.data_path"
            )
    if not cfg["policy"].get("model_name"):
        raise ConfigError(
            "policy.model_name is required: an HF model folder or a checkpoint_megatron folder "
            "(e.g. policy.model_name=/models/my-sft)"
        )
    if not train.get("data_path"):
        raise ConfigError("data.train.data_path is required: data.train.data_path=/path/to/train.jsonl")
    if validation is None:
        if not train.get("split_validation_size"):
            raise ConfigError(
                "data.validation is null, so data.train.split_validation_size must say how much of "
                "train to hold out (a fraction < 1 or a row count)"
            )
    elif not validation.get("data_path"):
        raise ConfigError(
            "data.validation.data_path is required (or set data.validation=null and "
            "data.train.split_validation_size=0.05)"
        )


def check_hf_architecture(path: str | None, key: str, *, trainable: bool = False) -> None:
    """An HF folder's ``config.json`` must name an architecture the converter has a family for (and, with
    ``trainable``, one the megatron-core builder can compute), so an unsupported model fails at ``-d`` with the
    supported list instead of in a job. A hub id, a ``checkpoint_megatron`` or a missing folder has no
    ``config.json`` here and is checked where it is read."""
    if not path or not (Path(path) / "config.json").is_file():
        return
    from rlvr.convert.hf_megatron import check_hf_folder  # imported only here: rlvr.convert pulls in torch
    from rlvr.errors import CheckpointError

    try:
        check_hf_folder(Path(path), trainable=trainable)
    except CheckpointError as exc:
        raise ConfigError(f"{key}={path}: {exc}") from exc


def check_policy_architecture(cfg: dict) -> None:
    if not (cfg.get("tiny") or {}).get("enabled", False) or cfg["policy"].get("model_name"):
        check_hf_architecture(cfg["policy"].get("model_name"), "policy.model_name", trainable=True)


def check_backends(cfg: dict) -> None:
    policy = cfg["policy"]
    dtensor = policy["dtensor_cfg"]["enabled"]
    megatron = policy["megatron_cfg"]["enabled"]
    if dtensor == megatron:
        raise ConfigError(
            "enable exactly one policy backend: policy.dtensor_cfg.enabled (PyTorch/HF) or "
            "policy.megatron_cfg.enabled (megatron-core)"
        )
    if policy["generation"]["backend"] == "vllm" and cfg["cluster"]["gpus_per_node"] == 0:
        raise ConfigError(
            "policy.generation.backend=vllm needs GPUs (cluster.gpus_per_node > 0); use "
            "policy.generation.backend=hf on a CPU machine"
        )


def check_loss(cfg: dict) -> None:
    """The loss's own validation (``ClippedPGLossConfig``), so that every combination the loss refuses when
    training starts (CISPO with a replaced ratio, force_on_policy_ratio with disable_ppo_ratio, ...) is refused
    here, at ``-d``."""
    from rlvr.grpo.loss_config import ClippedPGLossConfig

    ClippedPGLossConfig.from_dict(cfg["loss_fn"])


def check_advantage_estimator(cfg: dict) -> None:
    """The advantage estimator's own validation (its name and switches), as the trainer will build it."""
    from rlvr.grpo.advantage_config import check_estimator_config

    grpo = cfg["grpo"]
    adv = {k: v for k, v in grpo["adv_estimator"].items() if v is not None}
    for key in ("normalize_rewards", "use_leave_one_out_baseline"):  # null follows the top-level key, as upstream
        adv.setdefault(key, grpo[key])
    check_estimator_config(adv, cfg["loss_fn"])
    # Dynamic sampling keeps rows whose reference set (the group, or with LOO the other G - 1 rows) has a
    # non-zero std; one sample never has one, so such a group size drops every row of every batch.
    smallest = 3 if adv["use_leave_one_out_baseline"] else 2
    if grpo["use_dynamic_sampling"] and grpo["num_generations_per_prompt"] < smallest:
        raise ConfigError(
            f"grpo.use_dynamic_sampling with grpo.num_generations_per_prompt = {grpo['num_generations_per_prompt']}"
            f"{' and the leave-one-out baseline' if adv['use_leave_one_out_baseline'] else ''} would drop every row "
            f"(a single sample has no reward spread); set num_generations_per_prompt >= {smallest}"
        )
    low, high = grpo["advantage_clip_low"], grpo["advantage_clip_high"]
    if low is not None and high is not None and low > high:
        raise ConfigError(
            f"grpo.advantage_clip_low ({low}) is greater than grpo.advantage_clip_high ({high}): every advantage "
            "would be clamped to one value; set advantage_clip_low <= advantage_clip_high"
        )


def check_reference_policy(cfg: dict) -> None:
    loss = cfg["loss_fn"]
    beta = loss["reference_policy_kl_penalty"]
    if cfg["grpo"]["skip_reference_policy_logprobs_calculation"] and beta > 0:
        term = "reward (loss_fn.use_kl_in_reward)" if loss["use_kl_in_reward"] else "loss"
        raise ConfigError(
            f"grpo.skip_reference_policy_logprobs_calculation=true with loss_fn.reference_policy_kl_penalty = {beta} "
            f"would put a KL term against zeros, not the reference policy, into the {term}; set "
            f"loss_fn.reference_policy_kl_penalty=0 (no KL and no reference model) or "
            f"grpo.skip_reference_policy_logprobs_calculation=false"
        )


def check_megatron_weight_decay(cfg: dict) -> None:
    """The megatron backend keeps weight decay constant: a schedule must start and end at optimizer.weight_decay."""
    mcfg = cfg["policy"]["megatron_cfg"]
    sched, opt = mcfg.get("scheduler") or {}, mcfg.get("optimizer") or {}
    for key in ("start_weight_decay", "end_weight_decay"):
        value = sched.get(key)
        if value is not None and value != opt.get("weight_decay"):
            raise ConfigError(
                f"policy.megatron_cfg.scheduler.{key} = {value} differs from "
                f"policy.megatron_cfg.optimizer.weight_decay = {opt.get('weight_decay')}: rlvr keeps "
                f"weight decay constant; set it equal (or null)"
            )


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


def check_rewards_and_trackers(cfg: dict) -> None:
    """env.reward_functions (each callable imported now, so a typo fails here) and the trackers' libraries."""
    import importlib.util

    from rlvr.rewards.custom import check_reward_config

    check_reward_config(cfg["env"], nemo_gym=cfg["env"]["should_use_nemo_gym"])
    for key, module in (("mlflow_enabled", "mlflow"), ("wandb_enabled", "wandb")):
        if cfg["logger"][key] and importlib.util.find_spec(module) is None:
            raise ConfigError(f"logger.{key}=true needs {module}: pip install 'rlvr[tracking]' (or set it to false)")


RLVR_CHECKS: list[Check] = [
    check_tiny,
    check_inputs,
    check_batch_arithmetic,
    check_validation_sizes,
    check_nemo_gym_consistency,
    check_advantage_flags,
    check_backends,
    check_reference_policy,
    check_loss,
    check_advantage_estimator,
    check_megatron_weight_decay,
    check_policy_architecture,
    check_lora,
    check_rewards_and_trackers,
]


def check_rl_prep(cfg: dict) -> None:
    train = _data_entry(cfg, "train")
    if not train.get("data_path"):
        raise ConfigError("data.train.data_path is required: data.train.data_path=/path/to/train.jsonl")
    if _data_entry(cfg, "validation") is None and not train.get("split_validation_size"):
        raise ConfigError("data.validation is null, so data.train.split_validation_size must be set")


def check_hf_to_megatron(cfg: dict) -> None:
    if not cfg.get("hf_model_id"):
        raise ConfigError("hf_model_id is required: hf_model_id=/path/to/hf_model_folder")
    check_hf_architecture(cfg["hf_model_id"], "hf_model_id")


def check_megatron_to_hf(cfg: dict) -> None:
    if not cfg.get("megatron_path"):
        raise ConfigError("megatron_path is required: megatron_path=/path/to/checkpoint_megatron (root or iter_*)")


CHECKS: dict[str, list[Check]] = {
    "rl/nemo_rl/rlvr": RLVR_CHECKS,
    "data_prep/rl_prep": [check_rl_prep],
    "convert/hf_to_megatron": [check_hf_to_megatron],
    "convert/megatron_to_hf": [check_megatron_to_hf],
}


def run_checks(step_id: str, cfg: dict, inputs_valid: bool = True) -> list[ConfigError]:
    """Every cross-field problem of ``cfg``, one error per failing check (all checks run).

    With ``inputs_valid`` false (the schema already refused some value) a check that trips over a wrong type is
    skipped: its input is reported by the schema message.
    """
    messages = []
    for check in CHECKS.get(step_id, []):
        try:
            check(cfg)
        except ConfigError as exc:
            messages.append(exc)
        except (KeyError, TypeError, AttributeError, ValueError, ZeroDivisionError):
            if inputs_valid:
                raise
    return messages
