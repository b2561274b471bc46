"""Cross-field checks run before any compute, with the manifest's error names."""

from __future__ import annotations

import pytest

from rlvr.config import load_step_config
from rlvr.config.secrets import REDACTED, redact
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


def test_force_on_policy_ratio_needs_one_optimizer_step():
    """force_on_policy_ratio requires gbs == P*G (upstream's default.yaml fails this assertion at setup)."""
    err = fails("default", DATA + ["policy.train_global_batch_size=32"], r"force_on_policy_ratio=true needs")
    assert err.code == "rollout_batch_not_divisible"
    load_step_config(RLVR, "default", DATA + ["policy.train_global_batch_size=32", "loss_fn.force_on_policy_ratio=false"])


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
    load_step_config(RLVR, "default", ["data.train.data_path=/d.jsonl", "data.validation=null",
                                       "data.train.split_validation_size=0.1"])
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


def test_redact_recognises_secret_names():
    data = {"api_key": "x", "nested": {"ACCESS_TOKEN": "y", "password": "z", "plain": "keep"}, "l": [{"secret": 1}]}
    assert redact(data) == {"api_key": REDACTED, "nested": {"ACCESS_TOKEN": REDACTED, "password": REDACTED,
                                                            "plain": "keep"}, "l": [{"secret": REDACTED}]}
