"""What a step run asks of Snakemake: the request, the run folder, the targets and the command line.

The ``nemotron`` CLI and a plain ``snakemake`` call share this module: the CLI turns its arguments into a
:class:`WorkflowRequest` passed as ``--config rlvr_request=<json>``; the Snakefile reads it back (or uses the
default request: the tiny run of rl/nemo_rl/rlvr) and loads the config with the same loader. Snakemake and the CLI
therefore never see different configs.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rlvr.errors import UserError
from rlvr.paths import PROFILES_DIR, SNAKEFILE

DEFAULT_STEP = "rl/nemo_rl/rlvr"
DEFAULT_CONFIG = "tiny"
REQUEST_KEY = "rlvr_request"

# The rule whose output completes each step (the CLI builds it and whatever it depends on).
STEP_TARGET_RULES = {
    "rl/nemo_rl/rlvr": "report",
    "data_prep/rl_prep": "rl_prep",
    "convert/hf_to_megatron": "hf_to_megatron",
    "convert/megatron_to_hf": "megatron_to_hf",
}


@dataclass
class WorkflowRequest:
    """Which step to build, with which config (name or absolute path) and overrides."""

    step: str = DEFAULT_STEP
    config: str | None = DEFAULT_CONFIG
    overrides: list[str] = field(default_factory=list)

    def to_cli_value(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_snakemake_config(cls, config: dict) -> WorkflowRequest:
        raw = config.get(REQUEST_KEY)
        if raw is None:
            return cls()
        if isinstance(raw, str):
            raw = json.loads(raw)
        return cls(
            step=raw.get("step", DEFAULT_STEP), config=raw.get("config"), overrides=list(raw.get("overrides") or [])
        )


def output_root() -> Path:
    """``$RL_OUTPUT_DIR`` when set (upstream's tiny uses the same variable), else ``results/``."""
    return Path(os.environ.get("RL_OUTPUT_DIR") or "results")


def run_dir(step_id: str, config_name: str, run_name: str | None = None) -> Path:
    """``<root>/<name>`` for rlvr; ``<root>/<step leaf>-<name>`` for a step run on its own.

    ``<name>`` is ``run.name`` when set (two experiments of one config then get two folders), else the config name.
    """
    name = run_name or config_name
    if step_id == DEFAULT_STEP:
        return output_root() / name
    return output_root() / f"{step_id.rsplit('/', 1)[-1]}-{name}"


def find_profile(name_or_path: str) -> Path:
    """``profiles/<name>`` of the repo, or a folder path holding a Snakemake ``config.yaml``."""
    candidate = Path(name_or_path).expanduser()
    if ("/" in name_or_path or candidate.is_dir()) and (candidate / "config.yaml").is_file():
        return candidate.resolve()
    repo_profile = PROFILES_DIR / name_or_path
    if (repo_profile / "config.yaml").is_file():
        return repo_profile
    known = (
        sorted(p.name for p in PROFILES_DIR.iterdir() if (p / "config.yaml").is_file()) if PROFILES_DIR.is_dir() else []
    )
    raise UserError(
        f"Profile '{name_or_path}' not found: it is neither a folder with a config.yaml nor one of "
        f"{PROFILES_DIR}/{{{', '.join(known)}}}. Known profiles: {', '.join(known) or 'none'}"
    )


def snakemake_argv(
    request: WorkflowRequest, *, profile: Path, dry_run: bool = False, extra: list[str] | None = None
) -> list[str]:
    """The ``python -m snakemake ...`` command that builds ``request``'s step with ``profile``."""
    argv = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        os.getcwd(),
        "--profile",
        str(profile),
        "--config",
        f"{REQUEST_KEY}={request.to_cli_value()}",
    ]
    if dry_run:
        argv += ["--dry-run"]
    return argv + list(extra or [])
