"""Resolve the ``data:`` section of the step config (NeMo-RL key names) into one spec per dataset.

NeMo-RL semantics kept here: ``data.train`` and ``data.validation`` are a dict or a list of dicts; ``data.default``
fills the keys an entry does not have (absent keys only; an explicit ``null`` stays); ``env_name`` defaults to
``math`` (``nemo_gym`` for ``NemoGymDataset``); an entry's ``seed`` defaults to the step seed.
``split_validation_size`` (a fraction in ``[0, 1)`` or a row count) splits validation rows off a train entry; as
in NeMo-RL, these rows join any ``data.validation`` rows (on validation entries the key is ignored).

Hub datasets (``dataset_name`` other than null / ``ResponseDataset`` / ``NemoGymDataset``) cannot be read: this
project never downloads from a hub, so they fail with a message saying to export them to JSONL. Keys accepted
for compatibility but not implemented (``subset``, ``split``, ``repeat``, ``manifest_path``) are accepted only at
their "off" value. Top-level keys for the trainer (``shuffle``, ``num_workers``, ...) are not read here.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass
from pathlib import Path

from rlvr.errors import ConfigError, DataError

ENV_NAMES: tuple[str, ...] = ("math", "code", "nemo_gym")
LOCAL_DATASET_NAMES: tuple[str | None, ...] = (None, "ResponseDataset", "NemoGymDataset")
PROCESSORS: tuple[str, ...] = ("math_hf_data_processor", "math_data_processor", "nemo_gym_data_processor")
ENTRY_KEYS: frozenset[str] = frozenset(
    {
        "data_path",
        "input_key",
        "output_key",
        "split_validation_size",
        "seed",
        "prompt_file",
        "system_prompt_file",
        "env_name",
        "dataset_name",
        "processor",
        "subset",
        "split",
        "repeat",
    }
)


@dataclass(frozen=True)
class DatasetSpec:
    """One resolved dataset entry. ``key`` names it in messages (``data.train``, ``data.validation[1]``)."""

    role: str  # "train" or "validation"
    key: str
    data_path: str  # as configured: it is what the canonical rows' ``source`` names
    env_name: str
    dataset_name: str | None
    processor: str | None
    input_key: str | None
    output_key: str | None
    prompt_file: str | None
    system_prompt_file: str | None
    split_validation_size: float | int
    seed: int

    def summary(self) -> dict:
        """The spec as plain JSON for the data card."""
        return asdict(self)


@dataclass(frozen=True)
class DataPlan:
    """Everything ``rl_prep`` reads from ``data:``."""

    train: tuple[DatasetSpec, ...]
    validation: tuple[DatasetSpec, ...]
    default_agent_ref: dict | None
    #: ``data.allow_overlap``: a validation file may be a training file (otherwise refused).
    allow_overlap: bool = False


def _suggest(name: str, known: frozenset[str] | tuple) -> str:
    close = difflib.get_close_matches(name, [k for k in known if k], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _entries(value: object, key: str) -> list[tuple[str, dict]]:
    """``(key, entry)`` pairs from a dict, a list of dicts, or null."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [(key, value)]
    if isinstance(value, list) and all(isinstance(item, dict) for item in value):
        return [(f"{key}[{i}]", item) for i, item in enumerate(value)]
    raise ConfigError(f"{key} must be a mapping or a list of mappings, got {type(value).__name__}")


def _optional_str(entry: dict, name: str, key: str) -> str | None:
    value = entry.get(name)
    if value is not None and (not isinstance(value, str) or not value):
        raise ConfigError(f"{key}.{name} must be a non-empty string or null, got {value!r}")
    return value


def _split_size(entry: dict, key: str) -> float | int:
    value = entry.get("split_validation_size")
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}.split_validation_size must be a number, got {value!r}")
    if isinstance(value, float) and not 0.0 <= value < 1.0:
        raise ConfigError(f"{key}.split_validation_size={value}: a fraction must be in [0, 1) (or give a row count)")
    if isinstance(value, int) and value < 0:
        raise ConfigError(f"{key}.split_validation_size={value} must not be negative")
    return value


def _check_off_keys(entry: dict, key: str) -> None:
    """Keys of NeMo-RL hub/Gym loaders that have no meaning for a local JSONL: accepted only when off."""
    if entry.get("subset") is not None:
        raise ConfigError(f"{key}.subset is for hub datasets; local JSONL has no subsets: remove it or set null")
    if entry.get("split") not in (None, "train"):
        raise ConfigError(f"{key}.split={entry['split']!r}: a local JSONL file is one split; remove it or set null")
    if entry.get("repeat") not in (None, 1):
        raise ConfigError(
            f"{key}.repeat={entry['repeat']!r} is not supported (repeated rows would be dropped as "
            "duplicates); remove it or set 1"
        )


def _resolve_names(entry: dict, key: str) -> tuple[str | None, str, str | None]:
    """``(dataset_name, env_name, processor)`` of an entry, checked against each other."""
    dataset_name = entry.get("dataset_name")
    if dataset_name not in LOCAL_DATASET_NAMES:
        raise DataError(
            f"{key}.dataset_name={dataset_name!r} is a hub dataset, and this project never downloads from a hub: "
            f"export it to JSONL, set {key}.data_path to the file and {key}.dataset_name to null (or "
            "ResponseDataset / NemoGymDataset)"
        )
    env_name = entry.get("env_name") or ("nemo_gym" if dataset_name == "NemoGymDataset" else "math")
    if env_name not in ENV_NAMES:
        raise ConfigError(
            f"{key}.env_name={env_name!r} is unknown{_suggest(str(env_name), ENV_NAMES)}; known: {', '.join(ENV_NAMES)}"
        )
    if (dataset_name == "NemoGymDataset") != (env_name == "nemo_gym") and dataset_name is not None:
        raise ConfigError(
            f"{key}: dataset_name={dataset_name!r} does not go with env_name={env_name!r}; "
            "use NemoGymDataset with nemo_gym and ResponseDataset (or null) with math / code"
        )
    processor = entry.get("processor")
    if processor is not None and processor not in PROCESSORS:
        raise ConfigError(
            f"{key}.processor={processor!r} is unknown{_suggest(str(processor), PROCESSORS)}; "
            f"known: {', '.join(PROCESSORS)} (or null)"
        )
    if processor is not None and (processor == "nemo_gym_data_processor") != (env_name == "nemo_gym"):
        raise ConfigError(f"{key}: processor={processor!r} does not go with env_name={env_name!r}")
    return dataset_name, env_name, processor


def _resolve_entry(role: str, key: str, entry: dict, default: dict, seed: int) -> DatasetSpec:
    unknown = sorted(set(entry) - ENTRY_KEYS)
    if unknown:
        raise ConfigError(
            f"{key}.{unknown[0]} is not a data key{_suggest(unknown[0], ENTRY_KEYS)}; "
            f"known: {', '.join(sorted(ENTRY_KEYS))}"
        )
    merged = {**default, **entry}
    _check_off_keys(merged, key)
    dataset_name, env_name, processor = _resolve_names(merged, key)
    data_path = _optional_str(merged, "data_path", key)
    if data_path is None:
        raise ConfigError(f"{key}.data_path is not set; point it at a JSONL file")
    if not Path(data_path).is_file():
        raise ConfigError(
            f"{key}.data_path={data_path!r}: no such file (relative paths are resolved against {Path.cwd()})"
        )
    input_key, output_key = _optional_str(merged, "input_key", key), _optional_str(merged, "output_key", key)
    if input_key is not None and input_key == output_key:
        raise ConfigError(f"{key}.input_key and output_key are both {input_key!r}; they must name two columns")
    entry_seed = merged.get("seed")
    if entry_seed is not None and (isinstance(entry_seed, bool) or not isinstance(entry_seed, int)):
        raise ConfigError(f"{key}.seed must be an integer, got {entry_seed!r}")
    return DatasetSpec(
        role=role,
        key=key,
        data_path=data_path,
        env_name=env_name,
        dataset_name=dataset_name,
        processor=processor,
        input_key=input_key,
        output_key=output_key,
        prompt_file=_optional_str(merged, "prompt_file", key),
        system_prompt_file=_optional_str(merged, "system_prompt_file", key),
        split_validation_size=_split_size(merged, key) if role == "train" else 0,
        seed=seed if entry_seed is None else entry_seed,
    )


def resolve_data_config(data_cfg: dict, *, seed: int) -> DataPlan:
    """Check ``data_cfg`` (the ``data:`` section) and resolve each train / validation entry into a spec."""
    if not isinstance(data_cfg, dict):
        raise ConfigError(f"data must be a mapping, got {type(data_cfg).__name__}")
    if data_cfg.get("manifest_path") is not None:
        raise ConfigError(
            "data.manifest_path is not supported; set data.train.data_path and data.validation.data_path instead"
        )
    default = data_cfg.get("default") or {}
    if not isinstance(default, dict):
        raise ConfigError(f"data.default must be a mapping or null, got {type(default).__name__}")
    unknown = sorted(set(default) - ENTRY_KEYS)
    if unknown:
        raise ConfigError(f"data.default.{unknown[0]} is not a data key{_suggest(unknown[0], ENTRY_KEYS)}")
    train = tuple(
        _resolve_entry("train", k, e, default, seed) for k, e in _entries(data_cfg.get("train"), "data.train")
    )
    if not train:
        raise ConfigError("data.train is not set; give it a data_path (a JSONL file)")
    validation = tuple(
        _resolve_entry("validation", k, e, default, seed)
        for k, e in _entries(data_cfg.get("validation"), "data.validation")
    )
    envs = {spec.env_name for spec in train + validation}
    if "nemo_gym" in envs and len(envs) > 1:
        raise ConfigError(
            f"data entries mix nemo_gym with {sorted(envs - {'nemo_gym'})}: a run is either a "
            "NeMo-Gym run or an upstream (math / code) run",
            code="mixed_nemo_gym_and_upstream_config",
        )
    agent_ref = data_cfg.get("default_agent_ref")
    if agent_ref is not None and not (isinstance(agent_ref, dict) and isinstance(agent_ref.get("name"), str)):
        raise ConfigError(f"data.default_agent_ref must be a mapping with a 'name' (and 'type'), got {agent_ref!r}")
    allow_overlap = data_cfg.get("allow_overlap", False)
    if not isinstance(allow_overlap, bool):
        raise ConfigError(f"data.allow_overlap must be true or false, got {allow_overlap!r}")
    return DataPlan(train=train, validation=validation, default_agent_ref=agent_ref, allow_overlap=allow_overlap)
