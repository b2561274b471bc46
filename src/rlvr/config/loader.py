"""The one config loader, used by the ``nemotron`` CLI and by the Snakefile alike.

Order, as upstream: read the ``-c`` file with its ``defaults:`` bases → apply ``key=value`` overrides (YAML-typed,
last) → resolve interpolation (``${a.b}``, ``${oc.env:VAR,default}``, ``${oc.decode:...}``) → refuse literal
secrets → validate against the step's JSON Schema → run the step's cross-field checks. Nothing is computed
before all of this passes, so a bad config fails in a dry run, in seconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlvr.config import checks, schema, secrets
from rlvr.config.files import compose, find_config_file, load_yaml, locate_key
from rlvr.errors import ConfigError
from rlvr.steps.index import StepInfo

_OVERRIDE = re.compile(r"^(?P<op>[+~]?)(?P<key>[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*)(=(?P<value>.*))?$",
                       re.DOTALL)


@dataclass
class StepConfig:
    """A resolved, validated step config and where it came from."""

    step_id: str
    name: str  # the config's name: the -c name, or the file's stem for a path
    path: Path
    files: list[Path]
    overrides: list[str]
    resolved: dict[str, Any]
    unresolved: dict[str, Any] = field(repr=False)

    def redacted(self) -> dict[str, Any]:
        """The resolved config with secret values (strings read from the environment) as ``******``: printed."""
        return secrets.redact(self.resolved, self.unresolved)

    def redacted_yaml(self) -> str:
        return yaml.safe_dump(self.redacted(), sort_keys=False, default_flow_style=False, width=120)

    def engine_view(self) -> dict[str, Any]:
        """What is written (run config.yaml, stage config files): resolved, secrets as ``${oc.env:...}`` references.

        Re-loadable: other strings have ``${`` escaped, so ``-c`` on a written file gives the same config.
        """
        return secrets.with_secret_references(self.resolved, self.unresolved)


def parse_override(token: str) -> tuple[str, str, str | None]:
    """Split ``key=value`` (``+key=value`` adds, ``~key`` removes) into (op, key, value)."""
    match = _OVERRIDE.match(token)
    if not match or (match["op"] != "~" and match["value"] is None):
        raise ConfigError(f"bad override '{token}': write key.path=value (e.g. grpo.max_num_steps=10)")
    return match["op"], match["key"], match["value"]


def _apply_overrides(cfg, overrides: list[str]):
    for token in overrides:
        op, key, value = parse_override(token)
        if op == "~":
            parent_key, _, leaf = key.rpartition(".")
            parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
            if parent is None or leaf not in parent:
                raise ConfigError(f"override '{token}' removes '{key}', which is not in the config")
            parent.pop(leaf)
            continue
        try:
            parsed = load_yaml(value) if value != "" else ""
        except yaml.YAMLError:
            parsed = value  # not YAML: keep the text as a string, as OmegaConf's dotlist does
        try:
            OmegaConf.update(cfg, key, parsed, merge=False, force_add=True)
        except OmegaConfBaseException as exc:
            raise ConfigError(f"cannot apply override '{token}': {getattr(exc, 'msg', exc)}") from None
    return cfg


def _where(files: list[Path], overrides: list[str]):
    keys = {parse_override(t)[1]: t for t in overrides}

    def where(path: tuple) -> str:
        dotted = ".".join(str(p) for p in path)
        for key, token in keys.items():
            if dotted == key or dotted.startswith(key + ".") or key.startswith(dotted + "."):
                return f" (from override '{token}')"
        found = locate_key(files, tuple(str(p) for p in path))
        return f" ({found})" if found else ""

    return where


def load_step_config(step: StepInfo, config: str | None = None, overrides: list[str] | None = None) -> StepConfig:
    """Resolve and validate ``step``'s config ``config`` (name or path; default: the manifest's default)."""
    overrides = list(overrides or [])
    config = config or step.default_config
    path = find_config_file(config, step.config_dir)
    composed = compose(path)
    cfg = _apply_overrides(composed.cfg, overrides)
    try:
        unresolved = OmegaConf.to_container(cfg, resolve=False)
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"cannot resolve '{key}': {getattr(exc, 'msg', exc)}") from None
    resolved.pop("defaults", None)
    unresolved.pop("defaults", None)
    secrets.check_no_literal_secrets(unresolved)
    where = _where(composed.files, overrides)
    schema.validate(resolved, step.config_schema, where)
    checks.run_checks(step.id, resolved)
    name = path.stem
    return StepConfig(step.id, name, path, composed.files, overrides, resolved, unresolved)
