"""rlvr.utils.yaml_loaders: libyaml's parser, with the pure-Python parser's values, floats and error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rlvr.config.files import locate_key, read_yaml_mapping
from rlvr.errors import ConfigError
from rlvr.utils import yaml_loaders
from tests.conftest import REPO_ROOT

SHIPPED = sorted(
    p
    for folder in ("steps", "schemas", "profiles")
    for p in (REPO_ROOT / folder).rglob("*")
    if p.suffix in (".yaml", ".yml")
)


def test_the_fast_loaders_run_on_libyaml():
    """The speed comes from libyaml, PyYAML's C extension (installed with the wheels rlvr depends on)."""
    assert yaml.__with_libyaml__
    assert issubclass(yaml_loaders.ConfigLoader, yaml.CSafeLoader)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_shipped_config_schema_and_profile_reads_as_the_pure_python_parser_reads_it(path: Path):
    text = path.read_text()
    assert yaml_loaders.load_config_yaml(text) == yaml.load(text, Loader=yaml_loaders.PureConfigLoader)  # noqa: S506
    assert yaml_loaders.safe_load(text) == yaml.safe_load(text)


def test_scientific_notation_without_a_dot_is_a_float_only_in_configs():
    """``1e-4`` is a float in step configs and overrides (``ConfigLoader``), a string for ``safe_load`` (YAML 1.1),
    and both parsers agree on each."""
    text = "lr: 1e-4\nbig: -2E+3\nwith_dot: 1.0e-8\ninteger: 12\nword: e5\n"
    expected = {"lr": 1e-4, "big": -2000.0, "with_dot": 1e-8, "integer": 12, "word": "e5"}
    assert yaml_loaders.load_config_yaml(text) == expected
    assert yaml_loaders.safe_load(text) == {**expected, "lr": "1e-4", "big": "-2E+3"}
    assert isinstance(yaml_loaders.load_config_yaml("1e-4"), float)


@pytest.mark.parametrize("text", ["grpo:\n  a: [1, 2\n", "a: 1\n b: 2\n", "a: b: c\n", "key: 'unclosed\n"])
def test_a_syntax_error_is_reported_as_the_pure_python_parser_reports_it(tmp_path, text):
    """libyaml words syntax errors differently; the message and line:column users see are the pure parser's."""
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(yaml.MarkedYAMLError) as pure:
        yaml.load(text, Loader=yaml_loaders.PureConfigLoader)  # noqa: S506
    mark = pure.value.problem_mark
    with pytest.raises(ConfigError) as error:
        read_yaml_mapping(path)
    assert str(error.value) == f"{path}:{mark.line + 1}:{mark.column + 1}: invalid YAML: {pure.value.problem}"
    with pytest.raises(yaml.YAMLError) as fast:
        yaml_loaders.safe_load(text)
    assert str(fast.value) == str(pytest.raises(yaml.YAMLError, yaml.safe_load, text).value)


def test_key_locations_keep_their_line_numbers(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("# a comment\ngrpo:\n  num_prompts_per_step: 4\n\n  nested:\n    deep: {a: 1}\npolicy: {}\n")
    assert locate_key([path], ("grpo", "num_prompts_per_step")) == f"{path}:3"
    assert locate_key([path], ("grpo", "nested", "deep")) == f"{path}:6"
    assert locate_key([path], ("policy",)) == f"{path}:7"
    assert locate_key([path], ("grpo", "missing")) is None
