"""Step manifests: discovery, parsing defaults, id resolution with suggestions."""

from __future__ import annotations

import tomllib

import pytest

from rlvr.paths import STEPS_DIR
from rlvr.steps.index import UnknownStepError, discover, parse_manifest, resolve_step

SEED_PARAMETERS = {
    "grpo.num_generations_per_prompt": 8,
    "grpo.normalize_rewards": True,
    "env.should_use_nemo_gym": False,
}


def test_the_four_steps_are_discovered_sorted():
    """list order is (category, id, path), as upstream."""
    assert [s.id for s in discover()] == [
        "convert/hf_to_megatron",
        "convert/megatron_to_hf",
        "data_prep/rl_prep",
        "rl/nemo_rl/rlvr",
    ]


def test_rlvr_manifest_carries_the_seed_contract():
    """Consumes training_jsonl + checkpoint_megatron, produces checkpoint_megatron, the seed's parameters."""
    step = resolve_step("rl/nemo_rl/rlvr")
    assert [(a.type, a.required) for a in step.consumes] == [("training_jsonl", True), ("checkpoint_megatron", True)]
    assert [a.type for a in step.produces] == ["checkpoint_megatron"]
    params = {p.name: p for p in step.parameters}
    for name, default in SEED_PARAMETERS.items():
        assert params[name].default == default
    for name in (
        "grpo.max_num_steps",
        "grpo.num_prompts_per_step",
        "grpo.use_leave_one_out_baseline",
        "data.train.data_path",
        "data.validation.data_path",
        "policy.logprob_batch_size",
    ):
        assert name in params
    assert {e["name"] for e in step.errors} == {
        "missing_verifier_fields",
        "rollout_batch_not_divisible",
        "mixed_nemo_gym_and_upstream_config",
        "reward_function_not_validated",
    }
    assert step.strategies


def test_every_artifact_type_is_declared_in_types_toml():
    types = tomllib.loads((STEPS_DIR / "types.toml").read_text())
    for step in discover():
        for artifact in (*step.consumes, *step.produces):
            assert artifact.type in types, (step.id, artifact.type)


def test_parse_defaults_id_name_category_and_required(tmp_path):
    """Without explicit values: id = <category>/<dir>, name = title-cased dir, required = true."""
    path = tmp_path / "cat" / "my_step" / "step.toml"
    path.parent.mkdir(parents=True)
    path.write_text('[step]\ndescription = "x"\n[[consumes]]\ntype = "training_jsonl"\n')
    step = parse_manifest(path)
    assert (step.id, step.name, step.category) == ("cat/my_step", "My Step", "cat")
    assert step.consumes[0].required is True


def test_resolution_by_unique_leaf_and_suggestions():
    assert resolve_step("rlvr").id == "rl/nemo_rl/rlvr"
    assert resolve_step("hf_to_megatron").id == "convert/hf_to_megatron"
    with pytest.raises(UnknownStepError) as exc:
        resolve_step("rlvx")
    assert "Unknown step id: rlvx" in str(exc.value)
    assert "Did you mean: rl/nemo_rl/rlvr?" in str(exc.value)
    assert "nemotron steps list" in str(exc.value)
