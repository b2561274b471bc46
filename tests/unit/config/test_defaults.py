"""Defaults come from the schema, once: the loader fills them, the engine reads the same values, and every leaf
of the schema has one (with a description). Also: NeMo-RL's resolvers, strict integers, upstream spellings."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from rlvr.config import load_step_config
from rlvr.config.facts import needs_reference_model
from rlvr.config.files import locate_key
from rlvr.config.schema import load_schema, section_defaults
from rlvr.errors import ConfigError
from rlvr.grpo.advantages import GRPOAdvantageEstimator, build_advantage_estimator
from rlvr.grpo.loss import ClippedPGLossConfig
from rlvr.steps.index import resolve_step

RLVR = resolve_step("rl/nemo_rl/rlvr")
SCHEMA = "rlvr_config.schema.yaml"
DATA = ["data.train.data_path=/data/train.jsonl", "data.validation.data_path=/data/val.jsonl"]
# Keys other engineers are implementing at the same time; their schema entries are theirs to complete.
OTHERS = {
    "policy.tokenizer.chat_template",
    "policy.precision",
    "policy.logprob_chunk_size",
    "policy.dtensor_cfg.activation_checkpointing",
    "checkpointing.model_save_format",
    "env.should_mask_flagged_samples",
    "logger.mlflow_enabled",
    "logger.monitor_gpus",
    "logger.mlflow",
    "policy.dtensor_cfg.lora_cfg.enabled",
}


def _leaves(node: dict, path: tuple = ()):
    for key, sub in node.get("properties", {}).items():
        here = (*path, key)
        if "properties" in sub and "$ref" not in sub and "default" not in sub:
            yield from _leaves(sub, here)
        elif "$ref" not in sub:
            yield ".".join(here), sub


def minimal_config(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "minimal.yaml"
    path.write_text(
        textwrap.dedent("""\
        policy:
          model_name: /models/sft
        data:
          train: {data_path: /data/train.jsonl}
          validation: {data_path: /data/val.jsonl}
        """)
        + textwrap.dedent(text)
    )
    return path


def test_every_schema_leaf_has_a_description_and_a_default():
    """Keys of the schema (the data-entry and tiny $refs aside) carry both, so no reader needs a default."""
    missing = [
        (key, what)
        for key, sub in _leaves(load_schema(SCHEMA))
        if key not in OTHERS
        for what in ("description", "default")
        if what not in sub and key != "defaults"
    ]
    assert missing == []


def test_a_minimal_config_is_completed_from_the_schema(tmp_path):
    """Only a model and data: every section is filled, interpolated defaults included."""
    cfg = load_step_config(RLVR, str(minimal_config(tmp_path)), ["policy.precision=float32"]).resolved
    assert cfg["cluster"]["gpus_per_node"] == 1 and cfg["grpo"]["num_generations_per_prompt"] == 16
    assert cfg["policy"]["logprob_batch_size"] == cfg["policy"]["train_micro_batch_size"] == 4
    assert cfg["policy"]["generation"]["max_new_tokens"] == cfg["policy"]["max_total_sequence_length"] == 512
    assert cfg["grpo"]["reward_shaping"]["max_response_length"] == 512
    assert cfg["policy"]["megatron_cfg"]["optimizer"] is None  # an optional section defaults to null as a whole
    assert cfg["loss_fn"] == section_defaults(SCHEMA, "loss_fn")


def test_the_engine_reads_the_schema_defaults():
    """One default per key: the loss and the estimator fill missing keys from the schema, as the loader does."""
    loss = section_defaults(SCHEMA, "loss_fn")
    assert ClippedPGLossConfig.from_dict({}).reference_policy_kl_penalty == loss["reference_policy_kl_penalty"]
    assert ClippedPGLossConfig.from_dict({}).ratio_clip_max == loss["ratio_clip_max"]
    estimator = build_advantage_estimator({})
    assert isinstance(estimator, GRPOAdvantageEstimator)
    assert needs_reference_model({"loss_fn": loss}) == (loss["reference_policy_kl_penalty"] > 0)


def test_removed_key_takes_its_default_and_interpolations_follow_overrides():
    """`~key` then the default; an interpolated default follows the value it points at."""
    cfg = load_step_config(
        RLVR, "default", [*DATA, "~grpo.reward_shaping.max_response_length", "policy.generation.max_new_tokens=77"]
    ).resolved
    assert cfg["grpo"]["reward_shaping"]["max_response_length"] == 77


def test_nemo_rl_arithmetic_resolvers(tmp_path):
    """${mul}, ${add}, ${sub}, ${div}, ${max} as NeMo-RL registers them."""
    path = minimal_config(
        tmp_path,
        """\
        grpo:
          num_prompts_per_step: ${mul:4,8}
          num_generations_per_prompt: ${add:6,2}
          max_num_steps: ${sub:12,2}
          val_period: ${max:${grpo.max_num_steps},3}
          batch_multiplier: ${div:3,2}
          use_dynamic_sampling: true
        policy:  # replaces the minimal config's policy block (YAML keeps the last)
          model_name: /models/sft
          train_global_batch_size: 256
        """,
    )
    grpo = load_step_config(RLVR, str(path), ["policy.precision=float32"]).resolved["grpo"]
    assert (grpo["num_prompts_per_step"], grpo["num_generations_per_prompt"], grpo["max_num_steps"]) == (32, 8, 10)
    assert grpo["val_period"] == 10 and grpo["batch_multiplier"] == 1.5


@pytest.mark.parametrize("override", ["policy.train_micro_batch_size=64.0", "grpo.max_num_steps=10.0"])
def test_integer_keys_refuse_floats(override):
    """64.0 is an integer to JSON Schema but crashes torch at step 1: refused, naming the key."""
    key = override.split("=")[0]
    pattern = rf"'{re.escape(key)}' \(from override '{re.escape(override)}'\): .* is not of type 'integer'"
    with pytest.raises(ConfigError, match=pattern):
        load_step_config(RLVR, "tiny", [override])


def test_upstream_spellings_are_folded_and_contradictions_refused():
    cfg = load_step_config(
        RLVR, "tiny", ["grpo.num_val_generations_per_prompt=4", "grpo.stop_at_validation_threshold=0.9"]
    ).resolved
    assert cfg["grpo"]["stop_at_validation_metric_threshold"] == 0.9
    with pytest.raises(
        ConfigError,
        match=r"grpo.num_val_generations_per_prompt = 2 \(the upstream spelling\) "
        r"contradicts grpo.val_num_generations_per_prompt = 4",
    ):
        load_step_config(RLVR, "tiny", ["grpo.num_val_generations_per_prompt=2"])


def test_locate_key_of_the_top_level_and_of_absent_keys(tmp_path):
    """The top level (a missing section) and keys no file writes have no file:line (it used to crash)."""
    path = tmp_path / "c.yaml"
    path.write_text("grpo:\n  seed: 1\n")
    assert locate_key([path], ()) is None
    assert locate_key([path], ("cluster", "num_nodes")) is None
    assert locate_key([path], ("grpo", "seed")) == f"{path}:2"


def test_the_plan_names_what_only_the_real_run_can_check(tmp_path):
    """A hub model id and Gym config files that are not here are accepted at -d, with a note each."""
    from rlvr.config.facts import plan_notes

    cfg = load_step_config(
        RLVR,
        "nemo_gym",
        [
            *DATA,
            "policy.model_name=meta-llama/Llama-3.2-1B",
            f"env.nemo_gym.config_paths=[{tmp_path}, gym/agents.yaml]",
        ],
    ).resolved
    notes = plan_notes(cfg)
    assert len(notes) == 2
    assert "policy.model_name 'meta-llama/Llama-3.2-1B' is not a local folder" in notes[0]
    assert "env.nemo_gym.config_paths[1] 'gym/agents.yaml' does not exist here" in notes[1]
