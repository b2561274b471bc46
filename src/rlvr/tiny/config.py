"""Configuration of the tiny path: the ``tiny:`` section of the step config.

The JSON Schema beside this module (``tiny.schema.json``) is the single description of the keys, their types,
bounds and defaults; :meth:`TinyConfig.from_dict` validates against it, so the dataclasses below and the
schema cannot drift apart silently (a unit test compares their defaults). Cross-field rules that a schema cannot
state (``min_digits <= max_digits``, head counts that divide) are checked here too, before any compute.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from rlvr.errors import ConfigError

SCHEMA_FILE = "tiny.schema.json"


@cache
def load_tiny_schema() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of the ``tiny:`` section."""
    text = resources.files("rlvr.tiny").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


@dataclass(frozen=True)
class ProblemSplitConfig:
    """Difficulty and size of one family of arithmetic problems (a train file and its held-out val file)."""

    operations: tuple[str, ...] = ("add", "sub")
    min_digits: int = 1
    max_digits: int = 2
    train_size: int = 8000
    val_size: int = 256


def _rl_split_default() -> ProblemSplitConfig:
    # The RL prompts are the harder slice (two-digit operands only) of the SFT distribution: the SFT policy
    # solves some of them, so rewards vary within a group and RL has room to improve.
    return ProblemSplitConfig(min_digits=2, max_digits=2, train_size=2048, val_size=128)


@dataclass(frozen=True)
class TinyDataConfig:
    """The SFT problems and the RL prompts; no problem appears in two files."""

    sft: ProblemSplitConfig = field(default_factory=ProblemSplitConfig)
    rl: ProblemSplitConfig = field(default_factory=_rl_split_default)
    # A sloppy teacher: this fraction of the SFT demonstrations carries the other operator's answer.
    sft_wrong_operator_rate: float = 0.0
    # A careless teacher: this fraction of the SFT demonstrations has one digit of the answer wrong.
    sft_digit_slip_rate: float = 0.0


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the ``LlamaForCausalLM`` policy (about 0.8M parameters at the defaults)."""

    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 128
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False


@dataclass(frozen=True)
class TinySftConfig:
    """Supervised fine-tuning (AdamW, linear warmup then cosine decay) and its accuracy report."""

    steps: int = 1100
    batch_size: int = 64
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    label_smoothing: float = 0.0
    num_threads: int = 2
    log_every: int = 100
    eval_samples_per_prompt: int = 4
    eval_temperature: float = 1.0
    max_new_tokens: int = 12


@dataclass(frozen=True)
class TinyConfig:
    """Everything that determines the tiny data and the tiny SFT policy; equal configs give equal outputs."""

    seed: int = 1234
    data: TinyDataConfig = field(default_factory=TinyDataConfig)
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    sft: TinySftConfig = field(default_factory=TinySftConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None, where: str = "tiny") -> TinyConfig:
        """Validate a (possibly partial) ``tiny:`` mapping and fill in the defaults.

        ``where`` prefixes key paths in error messages (the section's place in the step config).
        Raises :class:`ConfigError` naming the offending key for unknown keys (with the closest valid one),
        wrong types, out-of-bounds values and inconsistent combinations.
        """
        d = {} if d is None else d
        schema = load_tiny_schema()
        _reject_unknown_keys(d, schema, where)
        _validate_schema(d, schema, where)
        data = d.get("data", {})
        cfg = cls(
            seed=d.get("seed", cls.seed),
            data=TinyDataConfig(
                sft=_split_from_dict(data.get("sft", {}), ProblemSplitConfig()),
                rl=_split_from_dict(data.get("rl", {}), _rl_split_default()),
                sft_wrong_operator_rate=float(
                    data.get("sft_wrong_operator_rate", TinyDataConfig.sft_wrong_operator_rate)
                ),
                sft_digit_slip_rate=float(data.get("sft_digit_slip_rate", TinyDataConfig.sft_digit_slip_rate)),
            ),
            model=dataclasses.replace(TinyModelConfig(), **d.get("model", {})),
            sft=dataclasses.replace(TinySftConfig(), **d.get("sft", {})),
        )
        _check_cross_fields(cfg, where)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Return the plain JSON-able mapping (lists, not tuples) that :meth:`from_dict` accepts."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def _split_from_dict(d: dict[str, Any], default: ProblemSplitConfig) -> ProblemSplitConfig:
    d = dict(d)
    if "operations" in d:
        d["operations"] = tuple(d["operations"])
    return dataclasses.replace(default, **d)


def _reject_unknown_keys(d: Any, schema: dict[str, Any], path: str) -> None:
    """Walk ``d`` alongside the schema's ``properties``; the first unknown key is an error with a suggestion."""
    props = schema.get("properties")
    if props is None or not isinstance(d, dict):
        return
    for key, value in d.items():
        if key not in props:
            close = difflib.get_close_matches(str(key), list(props), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"unknown key '{path}.{key}'.{hint} Valid keys under '{path}': {', '.join(sorted(props))}."
            )
        _reject_unknown_keys(value, props[key], f"{path}.{key}")


def _validate_schema(d: dict[str, Any], schema: dict[str, Any], where: str) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(d), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = ".".join([where, *(str(p) for p in err.absolute_path)])
        raise ConfigError(f"invalid value for '{key}': {err.message}. See {SCHEMA_FILE} for the allowed values.")


def _check_cross_fields(cfg: TinyConfig, where: str) -> None:
    """Rules between keys that the schema cannot express."""
    for name in ("sft", "rl"):
        split: ProblemSplitConfig = getattr(cfg.data, name)
        if split.min_digits > split.max_digits:
            raise ConfigError(
                f"'{where}.data.{name}.min_digits' ({split.min_digits}) exceeds "
                f"'{where}.data.{name}.max_digits' ({split.max_digits}); make min_digits <= max_digits."
            )
    m = cfg.model
    if m.hidden_size % m.num_attention_heads:
        raise ConfigError(
            f"'{where}.model.hidden_size' ({m.hidden_size}) must be divisible by "
            f"'{where}.model.num_attention_heads' ({m.num_attention_heads})."
        )
    if (m.hidden_size // m.num_attention_heads) % 2:
        raise ConfigError(
            f"the head dimension hidden_size/num_attention_heads = {m.hidden_size // m.num_attention_heads} "
            f"must be even for rotary embeddings; change '{where}.model.hidden_size' or num_attention_heads."
        )
    if m.num_attention_heads % m.num_key_value_heads:
        raise ConfigError(
            f"'{where}.model.num_key_value_heads' ({m.num_key_value_heads}) must divide "
            f"'{where}.model.num_attention_heads' ({m.num_attention_heads})."
        )
    if cfg.sft.warmup_steps >= cfg.sft.steps:
        raise ConfigError(
            f"'{where}.sft.warmup_steps' ({cfg.sft.warmup_steps}) must be below '{where}.sft.steps' ({cfg.sft.steps})."
        )
