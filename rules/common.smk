# Functions only (config access, input functions, targets); no rules. Everything here reads CFG, the config
# resolved by rlvr.config for the requested step, and RUN, its run folder.
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

from rlvr.launch.placement import plan_placement
from rlvr.stages.stage_config import sections_digest, stage_config_path

PY = shlex.quote(sys.executable)
E = CFG.engine_view()  # resolved config; secrets stay ${oc.env:...} references
STAGE_CONFIGS = {}  # rule -> the config sections it reads; written to files by the Snakefile's onstart


def sections(*keys):
    """The named top-level config sections (those present)."""
    return {k: E[k] for k in keys if k in E}


def stage_config(rule, cfg):
    """Register what ``rule`` reads: its params get the digest (a change re-runs the rule), its stage the path."""
    STAGE_CONFIGS[rule] = cfg
    return SimpleNamespace(digest=sections_digest(cfg), path=str(stage_config_path(RUN, rule)))


def tiny_enabled():
    return STEP.id == "rl/nemo_rl/rlvr" and bool((E.get("tiny") or {}).get("enabled"))


def lora_enabled():
    """policy.dtensor_cfg.lora_cfg.enabled: the rlvr rule then also outputs rlvr/lora_adapter."""
    return bool(((E.get("policy") or {}).get("dtensor_cfg") or {}).get("lora_cfg", {}).get("enabled"))


def is_checkpoint_megatron(path):
    """A checkpoint_megatron root or iter_* folder (by its marker files), as Megatron-Bridge recognises it."""
    p = Path(path)
    markers = ("latest_checkpointed_iteration.txt", "latest_train_state.pt", "metadata.json", ".metadata")
    return p.is_dir() and any((p / m).exists() for m in markers)


def policy_source():
    """Where the SFT policy comes from: the tiny SFT rule's folder, or policy.model_name."""
    if tiny_enabled() and not E["policy"].get("model_name"):
        return f"{RUN}/tiny_sft/policy"
    return E["policy"]["model_name"]


def sft_checkpoint():
    """The checkpoint_megatron that rlvr starts from: the user's, or the hf_to_megatron rule's output."""
    src = policy_source()
    if src and not tiny_enabled() and is_checkpoint_megatron(src):
        return src
    return f"{RUN}/hf_to_megatron/checkpoint_megatron"


def hf_source():
    """Input of hf_to_megatron: the HF folder (a file dependency when it is local, else a hub id param)."""
    if STEP.id == "convert/hf_to_megatron":
        return E["hf_model_id"]
    return policy_source()


def local_inputs(*paths):
    """Keep only paths that exist or that a rule of this workflow makes (hub ids are params, not inputs)."""
    return [p for p in paths if p and (Path(p).exists() or str(p).startswith(RUN))]


def data_path(split):
    """A data file for rl_prep: the user's, or one the tiny_data rule makes."""
    entry = E["data"].get(split)
    if entry is not None and entry.get("data_path"):
        return entry["data_path"]
    if tiny_enabled():
        return f"{RUN}/tiny_data/rl_{'train' if split == 'train' else 'val'}.jsonl"
    return None


def step_target():
    rule_name = STEP_TARGET_RULES[STEP.id]
    return {
        "report": f"{RUN}/report/report.md",
        "rl_prep": f"{RUN}/rl_prep",
        "hf_to_megatron": E.get("megatron_path") or f"{RUN}/hf_to_megatron/checkpoint_megatron",
        "megatron_to_hf": E.get("hf_path") or f"{RUN}/megatron_to_hf/hf",
    }[rule_name]
