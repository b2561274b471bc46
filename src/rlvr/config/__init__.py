"""Step configs: one loader (``load_step_config``) for the CLI and the Snakefile, JSON Schema validation and
cross-field checks. See ``loader.py`` for the order of operations."""

from rlvr.config.loader import StepConfig, load_step_config, parse_override

__all__ = ["StepConfig", "load_step_config", "parse_override"]
