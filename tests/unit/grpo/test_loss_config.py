"""rlvr.grpo.loss_config: the loss_fn validation the config checks run without torch, in step with the loss."""

from __future__ import annotations

import pytest

from rlvr.config.schema import load_schema
from rlvr.errors import ConfigError
from rlvr.grpo import loss, loss_config


def _loss_fn_schema() -> dict:
    return load_schema("rlvr_config.schema.yaml")["properties"]["loss_fn"]["properties"]


def test_the_declared_names_are_the_loss_registries_and_the_schema_enums():
    """A KL estimator or a truncation added to the loss (or the schema) and not declared here would be refused at
    -d although training could run it, or the reverse."""
    schema = _loss_fn_schema()
    assert loss_config.KL_TYPES == tuple(loss.KL_ESTIMATORS) == tuple(schema["reference_policy_kl_type"]["enum"])
    truncation_enum = [kind for kind in schema["truncated_importance_sampling_type"]["enum"] if kind is not None]
    assert loss_config.TRUNCATION_TYPES == tuple(loss.TRUNCATIONS) == tuple(truncation_enum)


def test_the_loss_refuses_what_the_config_checks_refuse_with_the_same_message():
    """ClippedPGLoss builds from the same ClippedPGLossConfig, so a config -d accepts is one training accepts."""
    assert loss.ClippedPGLossConfig is loss_config.ClippedPGLossConfig
    for bad in ({"reference_policy_kl_type": "k4"}, {"use_cispo": True, "ratio_clip_c": 3.0}, {"ratio_clip_min": 2}):
        with pytest.raises(ConfigError) as from_config:
            loss_config.ClippedPGLossConfig.from_dict(bad)
        with pytest.raises(ConfigError) as from_loss:
            loss.ClippedPGLoss(bad)
        assert str(from_config.value) == str(from_loss.value)
    with pytest.raises(ConfigError, match=r"unknown KL type 'k4'; known: k1, k2, k3"):
        loss.get_kl_estimator("k4")
    with pytest.raises(ConfigError, match=r"unknown KL type \['k1'\]"):
        loss_config.check_kl_type(["k1"])  # an unhashable value is refused like any unknown name
