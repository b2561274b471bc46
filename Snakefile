# rlvr: GRPO with verifiable rewards as a step graph. Wiring only: the config is loaded and validated by the
# same loader as the `nemotron` CLI (rlvr.config), the stages are functions of the rlvr package run through
# `python -m rlvr.stages`, and rules/ declares their inputs and outputs.
#
#   snakemake -n                         # plan the tiny run of rl/nemo_rl/rlvr (data and policy made here)
#   nemotron steps run rl/nemo_rl/rlvr -c default data.train.data_path=... --dry-run   # any step/config
#
# `snakemake --lint` is clean but for one lint, "Specify a conda environment or container for each rule": every
# rule runs a stage of the rlvr package, installed together with Snakemake (`make setup`); the Slurm and Lepton
# profiles choose the container of a run as a whole. `make lint` checks that no other lint appears.
from snakemake.utils import min_version

min_version("9.0")

from rlvr.config import load_step_config
from rlvr.launch.secret_env import restore_from_secrets_file
from rlvr.stages.stage_config import write_stage_configs
from rlvr.steps.index import resolve_step
from rlvr.workflow import WorkflowRequest, run_dir


report: "report/workflow.rst"


restore_from_secrets_file()  # a rule job on Slurm: its secrets, for the config, from the run's 0600 file
REQUEST = WorkflowRequest.from_snakemake_config(config)
STEP = resolve_step(REQUEST.step)
LOADED_CONFIG = load_step_config(STEP, REQUEST.config, REQUEST.overrides)
RUN_CONFIG = LOADED_CONFIG.engine_view()  # resolved; secrets stay ${oc.env:...} references
RUN_DIR = str(run_dir(STEP.id, LOADED_CONFIG.name, lookup(dpath="run/name", within=RUN_CONFIG, default=None)))


include: "rules/common.smk"
include: "rules/tiny.smk"
include: "rules/convert.smk"
include: "rules/data.smk"
include: "rules/rlvr.smk"
include: "rules/report.smk"


# Stages read their config sections from files in the run folder (never from a command line or a param):
# written when the run starts, for the rules of this DAG, so a dry run writes nothing (rlvr/stages/stage_config.py).
onstart:
    write_stage_configs(RUN_DIR, written_stage_configs())


rule all:
    input:
        get_final_output(),
    default_target: True
