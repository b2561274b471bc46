"""The data: section resolves as NeMo-RL does (default fills absent keys, lists of entries, seeds), and config
mistakes fail early with the key named and the fix."""

from __future__ import annotations

import pytest

from rlvr.data.config import resolve_data_config
from rlvr.errors import ConfigError, DataError


@pytest.fixture
def files(tmp_path):
    (tmp_path / "a.jsonl").write_text("{}\n")
    (tmp_path / "b.jsonl").write_text("{}\n")
    return str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")


def test_default_fills_only_absent_keys(files):
    """data.default fills keys an entry lacks; an explicit null in the entry is kept."""
    a, b = files
    plan = resolve_data_config(
        {
            "train": {"data_path": a, "prompt_file": None},
            "validation": {"data_path": b},
            "default": {"env_name": "code", "prompt_file": "p.txt", "input_key": "q"},
        },
        seed=5,
    )
    [train], [val] = plan.train, plan.validation
    assert (train.env_name, train.prompt_file, train.input_key, train.seed) == ("code", None, "q", 5)
    assert (val.env_name, val.prompt_file, val.key) == ("code", "p.txt", "data.validation")


def test_list_entries_get_indexed_keys_and_own_seeds(files):
    """train may be a list; each entry is named data.train[i] and keeps its own seed and split size."""
    a, b = files
    plan = resolve_data_config(
        {
            "train": [
                {"data_path": a, "seed": 9, "split_validation_size": 0.1},
                {"data_path": b, "split_validation_size": 2},
            ]
        },
        seed=1,
    )
    assert [(s.key, s.seed, s.split_validation_size) for s in plan.train] == [
        ("data.train[0]", 9, 0.1),
        ("data.train[1]", 1, 2),
    ]
    assert plan.validation == ()


def test_env_name_defaults_follow_dataset_name(files):
    """env_name defaults to math, or nemo_gym for NemoGymDataset."""
    a, _ = files
    assert resolve_data_config({"train": {"data_path": a}}, seed=0).train[0].env_name == "math"
    gym = resolve_data_config({"train": {"data_path": a, "dataset_name": "NemoGymDataset"}}, seed=0)
    assert gym.train[0].env_name == "nemo_gym"


@pytest.mark.parametrize(
    ("data", "error", "match"),
    [
        ({"train": {"data_path": "A", "dataset_name": "DAPOMath17K"}}, DataError, "export it to JSONL"),
        ({"train": {"data_path": "A", "env_name": "maths"}}, ConfigError, "did you mean 'math'"),
        ({"train": {"data_path": "A", "promt_file": "x"}}, ConfigError, "did you mean 'prompt_file'"),
        ({"train": {"data_path": "missing.jsonl"}}, ConfigError, "data.train.data_path='missing.jsonl': no such"),
        ({"train": {}}, ConfigError, "data.train.data_path is not set"),
        ({}, ConfigError, "data.train is not set"),
        ({"train": {"data_path": "A", "split_validation_size": 1.5}}, ConfigError, "must be in \\[0, 1\\)"),
        ({"train": {"data_path": "A", "input_key": "x", "output_key": "x"}}, ConfigError, "two columns"),
        ({"train": {"data_path": "A", "repeat": 3}}, ConfigError, "repeat=3 is not supported"),
        ({"train": {"data_path": "A", "processor": "nemo_gym_data_processor"}}, ConfigError, "does not go with"),
        ({"train": {"data_path": "A"}, "manifest_path": "m.json"}, ConfigError, "manifest_path is not supported"),
        (
            {"train": {"data_path": "A", "env_name": "nemo_gym"}, "validation": {"data_path": "A"}},
            ConfigError,
            "mixed_nemo_gym_and_upstream_config",
        ),
    ],
)
def test_config_mistakes_name_the_key(files, data, error, match):
    """Each mistake raises the right error class with the key (and, for typos, the closest valid name)."""
    a, _ = files

    def fill(node):
        if isinstance(node, dict):
            return {k: (a if v == "A" else fill(v)) for k, v in node.items()}
        return node

    with pytest.raises(error, match=match):
        resolve_data_config(fill(data), seed=0)
