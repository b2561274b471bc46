"""What each stage reads and which keys re-run its rule (rlvr.stages.sections), on the shipped tiny config."""

from __future__ import annotations

import pytest

from rlvr.config import load_step_config
from rlvr.stages import sections
from rlvr.steps.index import resolve_step


def tiny(*overrides: str) -> dict:
    return load_step_config(resolve_step("rl/nemo_rl/rlvr"), "tiny", list(overrides)).engine_view()


def digest(rule: str, cfg: dict) -> str:
    built = {
        "rl_prep": lambda: sections.rl_prep(
            cfg, data_paths={"train": "t.jsonl", "validation": "v.jsonl"}, tokenizer=None
        ),
        "rlvr": lambda: sections.rlvr(cfg),
        "reward_preflight": lambda: sections.reward_preflight(cfg),
        "megatron_to_hf": lambda: sections.megatron_to_hf(cfg),
    }[rule]()
    return sections.stage_config(rule, built).digest


@pytest.mark.parametrize(
    "override,changed",
    [
        ("logger.tensorboard_enabled=false", set()),
        ("checkpointing.keep_top_k=1", set()),
        ("checkpointing.save_period=7", set()),
        ("grpo.normalize_rewards=false", {"rlvr"}),
        ("grpo.seed=5", {"rlvr"}),  # no split_validation_size: rl_prep does not use the seed
        ("data.shuffle=false", {"rlvr"}),  # the trainer's key, not rl_prep's
        ("data.max_input_seq_length=40", {"rl_prep", "rlvr"}),
        ("env.math.timeout_s=20.0", {"reward_preflight", "rlvr"}),
        ("checkpointing.export_dtype=bfloat16", {"megatron_to_hf"}),
    ],
)
def test_each_key_changes_the_digest_of_exactly_the_rules_whose_outputs_it_changes(override, changed):
    rules = ("rl_prep", "rlvr", "reward_preflight", "megatron_to_hf")
    base, new = tiny(), tiny(override)
    assert {rule for rule in rules if digest(rule, base) != digest(rule, new)} == changed


def test_the_seed_reaches_rl_prep_only_when_a_split_uses_it():
    assert sections.rl_prep(tiny(), data_paths={}, tokenizer=None)["seed"] is None
    split = tiny("grpo.seed=5", "+data.train.split_validation_size=0.1")
    assert sections.rl_prep(split, data_paths={}, tokenizer=None)["seed"] == 5


def test_cosmetic_keys_are_still_in_the_stage_config_file():
    """The engine reads checkpointing.enabled and logger.* at run time: they are written, only not digested."""
    written = sections.rlvr(tiny())
    assert "checkpointing" in written and "logger" in written and "tiny" not in written
    assert set(written["data"]) == {"shuffle", "max_input_seq_length"}
