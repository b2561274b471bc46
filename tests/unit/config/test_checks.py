"""Cross-field checks run before any compute, with the manifest's error names."""

from __future__ import annotations

import pytest

from rlvr.config import load_step_config
from rlvr.config.secrets import REDACTED
from rlvr.errors import ConfigError
from rlvr.steps.index import resolve_step

RLVR = resolve_step("rl/nemo_rl/rlvr")
DATA = ["data.train.data_path=/data/train.jsonl", "data.validation.data_path=/data/val.jsonl"]


def fails(config: str, overrides: list[str], pattern: str) -> ConfigError:
    with pytest.raises(ConfigError, match=pattern) as exc:
        load_step_config(RLVR, config, overrides)
    return exc.value


def test_rollout_not_multiple_of_global_batch():
    """7 prompts x 16 = 112 rows do not split into optimizer steps of 256."""
    err = fails("tiny", ["grpo.num_prompts_per_step=7"], r"7 x 16 = 112 rows is not a multiple of .*= 256")
    assert err.code == "rollout_batch_not_divisible"


def test_force_on_policy_ratio_with_several_optimizer_steps_needs_the_importance_weight():
    """NeMo-RL asserts gbs == P*G with force_on_policy_ratio. rlvr accepts several optimizer steps per GRPO step
    when the truncated importance weight corrects the later mini-batches' drift (and says so in the plan), and
    refuses them without it, naming the three ways out."""
    from rlvr.config.facts import optimizer_steps_per_grpo_step, plan_notes

    few = DATA + ["policy.train_global_batch_size=32"]  # default: 32 prompts x 8 = 256 rollouts, 8 steps
    no_is = ["loss_fn.use_importance_sampling_correction=false", "loss_fn.truncated_importance_sampling_type=null"]
    err = fails("default", [*few, *no_is], r"8 optimizer steps per GRPO")
    assert err.code == "rollout_batch_not_divisible"
    for fix in ("policy.train_global_batch_size=256", "use_importance_sampling_correction=true", "ratio=false"):
        assert fix in str(err)
    cfg = load_step_config(RLVR, "default", [*few, "loss_fn.use_importance_sampling_correction=true"]).resolved
    assert optimizer_steps_per_grpo_step(cfg) == 8
    (note,) = [n for n in plan_notes(cfg) if "force_on_policy_ratio" in n]
    assert "8 optimizer steps per GRPO step (NeMo-RL refuses this)" in note and "=256 for exactly" in note
    one_step = load_step_config(RLVR, "default", [*few, "loss_fn.force_on_policy_ratio=false"]).resolved
    assert not [n for n in plan_notes(one_step) if "force_on_policy_ratio" in n]


def test_micro_batch_must_divide_global_batch():
    fails("tiny", ["policy.train_micro_batch_size=24"], "not a multiple of policy.train_micro_batch_size = 24")


def test_validation_size_consistency():
    """max_val_samples < val_batch_size would run no batch (upstream crash); a non-multiple drops prompts."""
    fails("tiny", ["grpo.max_val_samples=32"], r"no validation batch would run")
    fails("tiny", ["grpo.max_val_samples=100"], r"not a multiple of grpo.val_batch_size")
    load_step_config(RLVR, "tiny", ["grpo.max_val_samples=null"])  # null = the whole set, not a crash


def test_nemo_gym_needs_whole_validation_set():
    fails("nemo_gym", DATA + ["grpo.max_val_samples=64"], r"whole validation set")


def test_mixed_nemo_gym_and_upstream():
    """Gym rows on the upstream path, and plain rows on the Gym path, are both refused."""
    err = fails("default", DATA + ["data.default.env_name=nemo_gym"], r"holds NeMo-Gym rows")
    assert err.code == "mixed_nemo_gym_and_upstream_config"
    err = fails("nemo_gym", DATA + ["data.default.env_name=math"], r"need NeMo-Gym rows")
    assert err.code == "mixed_nemo_gym_and_upstream_config"


def test_advantage_flags_must_agree():
    """The estimator's flags and the top-level ones cannot silently diverge (upstream issue)."""
    fails("tiny", ["grpo.adv_estimator.normalize_rewards=false"], r"contradicts grpo.normalize_rewards")
    load_step_config(RLVR, "tiny", ["grpo.adv_estimator.normalize_rewards=true"])


def test_required_inputs_outside_tiny():
    fails("default", [], r"data.train.data_path is required")
    fails("default", ["data.train.data_path=/d.jsonl"], r"data.validation.data_path is required")
    load_step_config(
        RLVR,
        "default",
        ["data.train.data_path=/d.jsonl", "data.validation=null", "data.train.split_validation_size=0.1"],
    )
    fails("default", ["data.default.dataset_name=DAPOMath17K"], r"names a hub dataset")
    # With a data_path the hub name only says where the rows came from (Nemotron's default.yaml writes both).
    load_step_config(RLVR, "default", DATA + ["data.default.dataset_name=DAPOMath17K"])


def test_backend_choice():
    fails("tiny", ["policy.megatron_cfg.enabled=true"], r"enable exactly one policy backend")
    fails("tiny", ["policy.generation.backend=vllm"], r"vllm needs GPUs")


def test_loss_combinations():
    """The loss's own rules run at config time (the messages are the loss's)."""
    fails("tiny", ["loss_fn.sequence_level_importance_ratios=true"], r"\(GSPO\) requires token_level_loss: false")
    fails("tiny", ["loss_fn.truncated_importance_sampling_type=tis"], r"requires use_importance_sampling_correction")


def test_literal_secret_is_refused_and_env_reference_is_kept(monkeypatch):
    """A secret key must reference the environment; the engine view keeps the reference, never the value."""
    fails("tiny", ["run.env.env_vars.HF_TOKEN=hf_abc"], r"holds a literal secret")
    monkeypatch.setenv("MY_HF_TOKEN", "hf_real_value")
    cfg = load_step_config(RLVR, "tiny", ["run.env.env_vars.HF_TOKEN=${oc.env:MY_HF_TOKEN}"])
    assert cfg.resolved["run"]["env"]["env_vars"]["HF_TOKEN"] == "hf_real_value"
    assert cfg.redacted()["run"]["env"]["env_vars"]["HF_TOKEN"] == REDACTED
    assert "hf_real_value" not in cfg.redacted_yaml()
    assert cfg.engine_view()["run"]["env"]["env_vars"]["HF_TOKEN"] == "${oc.env:MY_HF_TOKEN}"


def test_skipping_the_reference_pass_with_a_kl_penalty_is_refused():
    """The KL term would be trained against zeros (silent wrong training): refused, in the loss or the reward."""
    fails(
        "tiny",
        ["grpo.skip_reference_policy_logprobs_calculation=true", "loss_fn.reference_policy_kl_penalty=0.05"],
        r"against zeros, not the reference policy, into the loss",
    )
    fails(
        "tiny",
        [
            "grpo.skip_reference_policy_logprobs_calculation=true",
            "loss_fn.reference_policy_kl_penalty=0.05",
            "loss_fn.use_kl_in_reward=true",
            "grpo.adv_estimator.name=reinforce_plus_plus",
        ],
        r"into the reward \(loss_fn.use_kl_in_reward\)",
    )
    load_step_config(
        RLVR, "tiny", ["grpo.skip_reference_policy_logprobs_calculation=true", "loss_fn.reference_policy_kl_penalty=0"]
    )


@pytest.mark.parametrize(
    "overrides,pattern",
    [
        (["loss_fn.use_cispo=true"], r"use_cispo is incompatible with force_on_policy_ratio"),
        (["loss_fn.disable_ppo_ratio=true"], r"force_on_policy_ratio and disable_ppo_ratio both replace the ratio"),
        (
            ["loss_fn.force_on_policy_ratio=false", "loss_fn.use_cispo=true", "loss_fn.ratio_clip_c=3.0"],
            r"use_cispo is incompatible with dual clipping",
        ),
    ],
)
def test_every_combination_the_loss_refuses_is_refused_at_config_time(overrides, pattern):
    """tiny trains with force_on_policy_ratio; these used to pass -d and fail when training started."""
    fails("tiny", overrides, pattern)


def test_all_problems_of_one_command_are_reported_together():
    """A schema error, an unknown key and two cross-field errors: one message, every problem, the first code."""
    err = fails(
        "tiny",
        ["policy.train_micro_batch_size=64.0", "grpo.sed=1", "grpo.num_prompts_per_step=7", "loss_fn.use_cispo=true"],
        r"invalid config \(4 problems\)",
    )
    text = str(err)
    for part in ("is not of type 'integer'", "unknown key 'grpo.sed'", "7 x 16 = 112 rows", "use_cispo"):
        assert part in text
    assert err.code == "rollout_batch_not_divisible"


def test_megatron_weight_decay_schedule_must_be_constant():
    base = [
        "policy.dtensor_cfg.enabled=false",
        "policy.megatron_cfg.enabled=true",
        "policy.megatron_cfg.optimizer={lr: 1.0e-5, weight_decay: 0.01}",
    ]
    fails(
        "tiny",
        [*base, "policy.megatron_cfg.scheduler={start_weight_decay: 0.0, end_weight_decay: 0.1}"],
        r"start_weight_decay = 0.0 differs from policy.megatron_cfg.optimizer.weight_decay = 0.01",
    )
    load_step_config(RLVR, "tiny", [*base, "policy.megatron_cfg.scheduler={start_weight_decay: 0.01}"])


def test_gym_server_blocks_rlvr_cannot_start_are_named(tmp_path):
    """A Nemotron-style Gym block becomes a local server; an unknown server type or a judge is refused."""
    gym = [
        "env.nemo_gym.resource_servers={}",
        "env.nemo_gym.tool_use.resources_servers.swe_bench.x=1",
        "env.nemo_gym.judged.resources_servers.math_with_judge.should_use_judge=true",
    ]
    err = fails("nemo_gym", DATA + gym, r"rlvr cannot start a 'swe_bench' server locally")
    assert "should_use_judge=true: rlvr's local math server has no LLM judge" in str(err)


def test_a_gym_server_block_beside_resource_servers_is_refused():
    """It would not be read: one place describes the servers."""
    fails(
        "nemo_gym",
        DATA + ["env.nemo_gym.code_gen.resources_servers.code_gen.debug=false"],
        r"env.nemo_gym.code_gen \(a NeMo-Gym server block\) is not read when env.nemo_gym.resource_servers is set",
    )
