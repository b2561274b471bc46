# Functions only (config access, input functions, targets); no rules. Everything here reads RUN_CONFIG, the
# config of the requested step as rlvr.config resolved it (secrets as ${oc.env:...} references), and RUN_DIR, its
# run folder. Config reaches rules one way: lookup() into RUN_CONFIG here, and each rule's stage reads its
# sections from <run>/stage_configs/<rule>.yaml (stage_config_file / stage_digest below).
import os
import shlex
import sys

from rlvr.ckpt_layout import is_checkpoint_megatron
from rlvr.launch.placement import plan_placement
from rlvr.stages import sections
from rlvr.stages.stage_config import stage_config_path
from rlvr.workflow import STEP_TARGET_RULES

# Shell commands run the stages as "$PYTHON -m rlvr.stages ...": the interpreter running Snakemake, so that they
# run in its environment (`python` on PATH may be another). Not a param: moving the environment re-runs nothing.
shell.prefix(f"PYTHON={shlex.quote(sys.executable)}; ")
# A rule that uses the whole machine asks for every core; Snakemake scales it down to --cores (a profile's
# `cores:`). Not workflow.cores: that needs --cores even for --dag, --rulegraph and --lint.
ALL_CORES = os.cpu_count() or 1


def config_value(dpath, default=None):
    """A key of the run config by its path (``policy/model_name``); ``default`` when the step's config has none."""
    return lookup(dpath=dpath, within=RUN_CONFIG, default=default)


# ---------------------------------------------------------------------------------------------- stage configs
# rule -> a function of no arguments returning the config sections its stage reads (rlvr/stages/sections.py).
# Each rules/*.smk registers its own; only the rules of the DAG evaluate theirs (their params below), and the
# Snakefile's onstart writes those.
STAGE_SECTIONS = {}
STAGE_CONFIGS = {}


def _stage_config(rule_name):
    if rule_name not in STAGE_CONFIGS:
        STAGE_CONFIGS[rule_name] = sections.stage_config(rule_name, STAGE_SECTIONS[rule_name]())
    return STAGE_CONFIGS[rule_name]


def stage_config_file(rule_name):
    """Params function: the rule's stage config file (written when the run starts, never a rule output)."""
    return lambda wildcards: str(stage_config_path(RUN_DIR, rule_name))


def stage_digest(rule_name):
    """Params function: the digest of the keys that change the rule's outputs (a change re-runs the rule)."""
    return lambda wildcards: _stage_config(rule_name).digest


def written_stage_configs():
    return {rule_name: stage.sections for rule_name, stage in STAGE_CONFIGS.items()}


_PLACEMENT = []


def rlvr_placement():
    """The rlvr config's placement plan (rlvr/launch/placement.py), which the trainer follows: the rlvr job's
    nodes and GPUs (what Slurm and Lepton request) come from it. Made once, when the rlvr rule is in the DAG."""
    if not _PLACEMENT:
        _PLACEMENT.append(plan_placement(RUN_CONFIG))
    return _PLACEMENT[0]


# ---------------------------------------------------------------------------------------------- optional parts
def tiny_bootstrap():
    """The tiny bootstrap (rules/tiny.smk) makes what an rlvr config with tiny.enabled does not give: the SFT
    policy when policy.model_name is unset, the data files when data.<split>.data_path is unset."""
    return bool(config_value("tiny/enabled", False))


def policy_source():
    """The SFT policy: policy.model_name (an HF folder, a hub id or a checkpoint_megatron), else tiny_sft's."""
    given = config_value("policy/model_name")
    if given or not tiny_bootstrap():
        return given
    return str(rules.tiny_sft.output.policy)


def sft_policy_made_here():
    """The tiny bootstrap's SFT policy when this run made it (the report shows its SFT accuracy), else none."""
    source = policy_source()
    return [source] if source == rules.tiny_sft.output.policy else []


def sft_checkpoint():
    """The checkpoint_megatron rlvr starts from: the given policy when it already is one, else hf_to_megatron's."""
    source = policy_source()
    return source if source and is_checkpoint_megatron(source) else str(rules.hf_to_megatron.output.ckpt)


def data_path(split):
    """rl_prep's input for data.train / data.validation: the user's file, else the tiny bootstrap's."""
    given = config_value(f"data/{split}/data_path")
    if given or not tiny_bootstrap():
        return given
    return str(rules.tiny_data.output.rl_train if split == "train" else rules.tiny_data.output.rl_val)


def export_source():
    """megatron_to_hf's input: convert/megatron_to_hf's own megatron_path, else rlvr's aligned checkpoint."""
    if STEP.id == "convert/megatron_to_hf":
        return config_value("megatron_path")
    return str(rules.rlvr.output.ckpt)


def rl_prep_tokenizer():
    """What templates the prompts: data_prep/rl_prep's `tokenizer` key; in the rlvr DAG policy.tokenizer.name,
    else the SFT checkpoint's own tokenizer (so the prompts match the policy)."""
    if STEP.id == "data_prep/rl_prep":
        return config_value("tokenizer")
    return config_value("policy/tokenizer/name") or sft_checkpoint()


def chat_template_file():
    """The .jinja file a chat template setting names (policy.tokenizer.chat_template, or data_prep/rl_prep's
    chat_template): an input, so that editing it re-runs rl_prep and a missing file stops the plan."""
    value = config_value("chat_template") or config_value("policy/tokenizer/chat_template")
    return [value] if isinstance(value, str) and value.endswith((".jinja", ".j2")) else []


def lora_adapter_output():
    """rlvr's extra output in a LoRA run (policy.dtensor_cfg.lora_cfg.enabled): the PEFT adapter folder."""
    if config_value("policy/dtensor_cfg/lora_cfg/enabled", False):
        return {"lora_adapter": directory(f"{RUN_DIR}/rlvr/lora_adapter")}
    return {}


def local_files(*paths):
    """Inputs: the paths that exist here or are made by a rule; a hub id stays a config value, not an input."""
    return [p for p in paths if p and (os.path.exists(p) or str(p).startswith(RUN_DIR))]


# ---------------------------------------------------------------------------------------------- targets
# A step run on its own may name its own destination; the rlvr DAG keeps every output in the run folder.
STEP_DESTINATIONS = {"convert/hf_to_megatron": "megatron_path", "convert/megatron_to_hf": "hf_path"}


def step_destination(rule_name, default):
    """The output path of a rule; the step's destination key when the rule is the requested step's target, else
    ``default``."""
    key = STEP_DESTINATIONS.get(STEP.id)
    if key and STEP_TARGET_RULES[STEP.id] == rule_name and config_value(key):
        return config_value(key)
    return default


def get_final_output():
    """The target of the whole workflow: the outputs of the requested step's target rule (and all they depend on)."""
    return list(getattr(rules, STEP_TARGET_RULES[STEP.id]).output)
