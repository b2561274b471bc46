"""rlvr.grpo.advantage_config: the estimator checks -d runs without torch refuse what building one refuses."""

from __future__ import annotations

import pytest

from rlvr.config.schema import load_schema
from rlvr.errors import ConfigError
from rlvr.grpo import advantage_config, advantages


def test_the_builtin_names_are_the_registered_estimators_and_the_schema_enum():
    schema = load_schema("rlvr_config.schema.yaml")["properties"]["grpo"]["properties"]["adv_estimator"]
    assert tuple(sorted(advantages.ADVANTAGE_ESTIMATORS)) == advantage_config.BUILTIN_ESTIMATORS
    assert tuple(schema["properties"]["name"]["enum"]) == advantage_config.BUILTIN_ESTIMATORS


@pytest.mark.parametrize(
    "adv,loss_fn",
    [
        ({"normalise_rewards": True}, None),
        ({"name": "ppo"}, None),
        ({"name": "gdpo"}, None),
        ({"reward_weights": [1.0]}, None),
        ({"name": "reinforce_plus_plus"}, {"reference_policy_kl_type": "k9"}),
    ],
)
def test_check_refuses_what_the_build_refuses_with_the_same_message(adv, loss_fn):
    with pytest.raises(ConfigError) as built:
        advantages.build_advantage_estimator(adv, loss_fn)
    with pytest.raises(ConfigError) as checked:
        advantage_config.check_estimator_config(adv, loss_fn)
    assert str(checked.value) == str(built.value)


@pytest.mark.parametrize("name", advantage_config.BUILTIN_ESTIMATORS)
def test_check_accepts_what_the_build_accepts(name):
    adv, loss_fn = {"name": name, "minus_baseline": False}, {"reference_policy_kl_type": "k1"}
    advantage_config.check_estimator_config(adv, loss_fn)
    assert advantages.build_advantage_estimator(adv, loss_fn).name == name
