"""How a rule's config reaches its stage: a file in the run folder, never a command line or a Snakemake param.

The Snakefile registers, per rule, the config sections the rule reads (in the written form: resolved, secrets as
``${oc.env:...}`` references, see :mod:`rlvr.config.secrets`), and writes them to
``<run>/stage_configs/<rule>.yaml`` when the workflow starts (Snakemake's ``onstart``, so a dry run writes
nothing). The rule's params carry only :func:`sections_digest` of those sections: a config change still re-runs
the rule, while ``.snakemake/metadata``, ``ps`` and the job scripts see a hash and a path, no values. The stage
reads the file with :func:`read_stage_config`, which resolves the secret references from the stage's own
environment.

The folder is not an output of any rule: Snakemake empties a rule's output folders before the job, and a
re-written file must not make rules look out of date (only the digest decides that).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from rlvr.config.secrets import config_yaml, resolve_references
from rlvr.errors import UserError
from rlvr.utils.atomic import atomic_file
from rlvr.utils.yaml_loaders import safe_load

STAGE_CONFIG_DIR = "stage_configs"


def stage_config_path(run_dir: str | Path, rule: str) -> Path:
    return Path(run_dir) / STAGE_CONFIG_DIR / f"{rule}.yaml"


def sections_digest(sections: dict) -> str:
    """A short SHA-256 of the sections (references, not secret values: rotating a token re-runs nothing)."""
    canonical = json.dumps(sections, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def write_stage_configs(run_dir: str | Path, by_rule: dict[str, dict]) -> list[Path]:
    """Write each rule's sections to its stage config file (atomically: a running job never reads half a file)."""
    written = []
    for rule, sections in sorted(by_rule.items()):
        path = stage_config_path(run_dir, rule)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path) as fh:
            fh.write(
                f"# config sections read by the rule '{rule}' (digest {sections_digest(sections)}); "
                "secrets are ${oc.env:...} references, resolved by the stage from its environment\n"
            )
            fh.write(config_yaml(sections))
        written.append(path)
    return written


def read_stage_config(path: str | Path, *, resolve: bool = True) -> dict:
    """A stage config file, with its secret references resolved (``resolve=False``: as written, for records)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UserError(
            f"stage config {path} does not exist: stages read the config the workflow writes when it "
            f"starts; run the step with `nemotron steps run ...` or snakemake (not a dry run)"
        ) from None
    try:
        data = safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"stage config {path} is not valid YAML ({exc}); re-run the step to re-write it") from None
    if not isinstance(data, dict):
        raise UserError(f"stage config {path} must hold a mapping of config sections; re-run the step")
    return resolve_references(data, str(path)) if resolve else data
