"""Tests of rlvr.tiny.config: the ``tiny:`` section's dataclasses and its JSON Schema."""

from __future__ import annotations

import dataclasses

import jsonschema
import pytest

from rlvr.errors import ConfigError
from rlvr.tiny.config import TinyConfig, load_tiny_schema


def _walk_properties(schema: dict, path: str = "tiny"):
    """Yield (path, subschema) for every object and property of the schema."""
    yield path, schema
    for key, sub in schema.get("properties", {}).items():
        yield from _walk_properties(sub, f"{path}.{key}")
    if "items" in schema:
        yield from _walk_properties(schema["items"], f"{path}[]")


def _schema_defaults(schema: dict) -> dict:
    """The nested defaults a schema declares at its leaves (objects are recursed into)."""
    out = {}
    for key, sub in schema["properties"].items():
        out[key] = _schema_defaults(sub) if "properties" in sub else sub["default"]
    return out


def test_schema_is_valid_draft_2020_12_and_fully_described():
    """The schema is valid 2020-12; every object forbids extra keys; every property has a type and a description."""
    schema = load_tiny_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for path, sub in _walk_properties(schema):
        assert "type" in sub, path
        assert sub.get("description"), path
        if sub["type"] == "object":
            assert sub.get("additionalProperties") is False, path


def test_schema_defaults_equal_dataclass_defaults():
    """The defaults stated in the schema are exactly the dataclass defaults (one intended run, two descriptions)."""
    assert _schema_defaults(load_tiny_schema()) == TinyConfig().to_dict()


def test_defaults_validate_against_schema_and_round_trip():
    """The default config, written out, validates against the schema and reads back equal."""
    d = TinyConfig().to_dict()
    jsonschema.Draft202012Validator(load_tiny_schema()).validate(d)
    assert TinyConfig.from_dict(d) == TinyConfig()
    assert TinyConfig.from_dict(None) == TinyConfig()


def test_partial_dict_overrides_only_given_keys():
    """A partial mapping changes the given keys and keeps every other default, per split family."""
    cfg = TinyConfig.from_dict({"seed": 7, "data": {"rl": {"val_size": 10, "operations": ["mul"]}}, "sft": {"lr": 1}})
    assert cfg.seed == 7
    assert cfg.data.rl.val_size == 10 and cfg.data.rl.operations == ("mul",)
    assert cfg.data.rl.min_digits == TinyConfig().data.rl.min_digits == 2
    assert cfg.data.sft == TinyConfig().data.sft
    assert cfg.sft.lr == 1.0 and cfg.sft.steps == TinyConfig().sft.steps
    assert dataclasses.replace(cfg.model) == TinyConfig().model


@pytest.mark.parametrize(
    ("d", "needle"),
    [
        ({"sedd": 1}, "unknown key 'tiny.sedd'. Did you mean 'seed'?"),
        ({"sft": {"step": 5}}, "unknown key 'tiny.sft.step'. Did you mean 'steps'?"),
        ({"data": {"rl": {"max_digit": 3}}}, "unknown key 'tiny.data.rl.max_digit'. Did you mean 'max_digits'?"),
    ],
)
def test_unknown_keys_are_named_with_a_suggestion(d, needle):
    """An unknown key at any depth is a ConfigError naming its full path and the closest valid key."""
    with pytest.raises(ConfigError) as info:
        TinyConfig.from_dict(d)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("d", "key"),
    [
        ({"seed": "x"}, "tiny.seed"),
        ({"seed": True}, "tiny.seed"),
        ({"sft": {"steps": 0}}, "tiny.sft.steps"),
        ({"model": {"hidden_size": 1.5}}, "tiny.model.hidden_size"),
        ({"data": {"sft": {"operations": ["div"]}}}, "tiny.data.sft.operations.0"),
        ({"data": {"sft": {"operations": []}}}, "tiny.data.sft.operations"),
    ],
)
def test_bad_types_and_bounds_name_the_key(d, key):
    """Wrong types, booleans for integers, out-of-bounds values and unknown operations name the offending key."""
    with pytest.raises(ConfigError) as info:
        TinyConfig.from_dict(d)
    assert f"'{key}'" in str(info.value)


@pytest.mark.parametrize(
    ("d", "needle"),
    [
        ({"data": {"sft": {"min_digits": 3, "max_digits": 2}}}, "tiny.data.sft.min_digits"),
        ({"model": {"hidden_size": 130}}, "tiny.model.hidden_size"),
        ({"model": {"hidden_size": 12, "num_attention_heads": 4}}, "even for rotary"),
        ({"model": {"num_key_value_heads": 3}}, "tiny.model.num_key_value_heads"),
        ({"sft": {"steps": 10, "warmup_steps": 10}}, "tiny.sft.warmup_steps"),
    ],
)
def test_cross_field_rules(d, needle):
    """Inconsistent combinations the schema cannot express are ConfigErrors that name the keys."""
    with pytest.raises(ConfigError) as info:
        TinyConfig.from_dict(d)
    assert needle in str(info.value)


def test_where_prefixes_key_paths():
    """``where`` names the section's place in the step config in error messages."""
    with pytest.raises(ConfigError, match=r"'policy\.tiny\.bogus'"):
        TinyConfig.from_dict({"bogus": 1}, where="policy.tiny")
