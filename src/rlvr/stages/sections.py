"""What each rule's stage reads from the run config, and which of those keys change its outputs.

This is the one place that says it. ``rules/common.smk::stage_config`` calls :func:`stage_config` per rule: the
sections are written to ``<run>/stage_configs/<rule>.yaml`` (what the stage reads, see
:mod:`rlvr.stages.stage_config`), and the digest goes into the rule's params, so a change re-runs exactly the rules
whose outputs it changes. A key a stage reads that cannot change its outputs is in the file but not in the
digest (:data:`COSMETIC`): changing it re-runs nothing.

Paths made by other rules (the tiny data, the SFT checkpoint) are passed in by the rules, which declare them as
inputs; everything else comes from the config. The rlvr step's config and the single steps' configs (rl_prep,
convert) name some settings differently (``grpo.seed`` / ``seed``, ``policy.tokenizer.*`` / ``tokenizer``,
``checkpointing.export_dtype`` / ``torch_dtype``); each function below reads whichever config it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlvr.stages.stage_config import sections_digest

# Keys a stage reads that do not change its outputs. rlvr: ``logger.*`` says where copies of the metrics go
# (TensorBoard, MLflow), what is printed, whether rollouts are dumped and GPU readings taken (gpu/* columns in
# metrics.jsonl: measurements of the machine, not results); ``checkpointing.*`` is resume bookkeeping (step
# checkpoints: where, how often, how many kept; the final checkpoint_megatron is written either way, and
# export_dtype is megatron_to_hf's). The trained weights, summary and metric values are the same.
COSMETIC: dict[str, tuple[str, ...]] = {"rlvr": ("logger", "checkpointing")}

# The data keys rl_prep reads (data/config.py); shuffle and num_workers are the trainer's.
RL_PREP_DATA_KEYS = ("max_input_seq_length", "allow_overlap", "train", "validation", "default", "default_agent_ref")
# The data keys the rlvr stage reads itself (the rest reached it through rl_prep's files).
RLVR_DATA_KEYS = ("shuffle", "max_input_seq_length")
RLVR_SECTIONS = ("grpo", "loss_fn", "policy", "env", "cluster", "checkpointing", "logger")


@dataclass(frozen=True)
class StageConfig:
    """A rule's stage config: ``sections`` (written for the stage) and ``digest`` (the rule's params)."""

    sections: dict[str, Any]
    digest: str


def stage_config(rule: str, sections: dict[str, Any]) -> StageConfig:
    """``sections`` with the digest of the keys that change ``rule``'s outputs."""
    cosmetic = COSMETIC.get(rule, ())
    return StageConfig(sections, sections_digest({k: v for k, v in sections.items() if k not in cosmetic}))


def _pick(section: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: section[k] for k in keys if k in section}


def tiny_data(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"tiny": _pick(cfg["tiny"], ("seed", "data"))}


def tiny_sft(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"tiny": {k: v for k, v in cfg["tiny"].items() if k != "enabled"}}


def hf_to_megatron(cfg: dict[str, Any], *, source: str) -> dict[str, Any]:
    """``source``: the HF folder or hub id. In the rlvr DAG the SFT policy is converted in float32 (the rlvr
    config has no dtype key; training casts to policy.precision itself)."""
    return {"hf_model_id": source, "torch_dtype": cfg.get("torch_dtype") or cfg.get("dtype") or "float32"}


def megatron_to_hf(cfg: dict[str, Any]) -> dict[str, Any]:
    """The export's dtype: checkpointing.export_dtype after rlvr, the convert step's own torch_dtype (or its
    ``dtype`` alias) on its own; unset = the checkpoint's recorded source dtype, never silently the training's."""
    if "checkpointing" in cfg:
        dtype = cfg["checkpointing"]["export_dtype"]
    else:
        dtype = cfg.get("torch_dtype") or cfg.get("dtype")
    return {"torch_dtype": dtype or None, "hf_model_id": cfg.get("hf_model_id") or None}


def rl_prep(cfg: dict[str, Any], *, data_paths: dict[str, str | None], tokenizer: str | None) -> dict[str, Any]:
    """``data_paths``: the effective train / validation files (the user's or the tiny bootstrap's);
    ``tokenizer``: the folder or hub id that templates the prompts (None: plain-text prompts).

    The seed only seeds ``split_validation_size`` splits: without one it is left out (None), so changing
    ``grpo.seed`` re-runs rl_prep only when a split uses it.
    """
    in_rlvr = "policy" in cfg  # the rlvr step's config; else data_prep/rl_prep's own
    template_cfg = cfg["policy"]["tokenizer"] if in_rlvr else cfg
    data = _pick(cfg["data"], RL_PREP_DATA_KEYS)
    for split, path in data_paths.items():
        if path:
            data[split] = {**(data.get(split) or {}), "data_path": path}
    seed = cfg["grpo"]["seed"] if in_rlvr else cfg["seed"]
    return {
        "data": data,
        "seed": seed if _splits_validation(data) else None,
        "tokenizer": tokenizer,
        "template": {
            "chat_template": template_cfg.get("chat_template"),
            "chat_template_kwargs": template_cfg.get("chat_template_kwargs"),
            "key": "policy.tokenizer.chat_template" if in_rlvr else "chat_template",
        },
    }


def _splits_validation(node: Any) -> bool:
    """Whether any data entry (or data.default) sets a non-zero ``split_validation_size``."""
    if isinstance(node, dict):
        return bool(node.get("split_validation_size")) or any(_splits_validation(v) for v in node.values())
    if isinstance(node, list):
        return any(_splits_validation(v) for v in node)
    return False


def reward_preflight(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"env": cfg["env"]}


def rlvr(cfg: dict[str, Any]) -> dict[str, Any]:
    return {**_pick(cfg, RLVR_SECTIONS), "data": _pick(cfg["data"], RLVR_DATA_KEYS)}
