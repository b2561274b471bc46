"""The one config loader, used by the ``nemotron`` CLI and by the Snakefile alike.

Order, as upstream: read the ``-c`` file with its ``defaults:`` bases → apply ``key=value`` overrides (YAML-typed,
last; ``~key`` removes a key, which then takes its default) → fill every missing key with the schema's
``default`` (once; the engine keeps no second default) → resolve interpolation (``${a.b}``,
``${oc.env:VAR,default}``, ``${oc.decode:...}`` and NeMo-RL's ``${mul:a,b}``, ``add``, ``sub``, ``div``, ``max``)
→ refuse literal secrets → validate against the step's JSON Schema → run the step's cross-field checks, each
owning section's own validation included (the loss, the advantage estimator). Schema errors and cross-field
errors are reported together in one message. Nothing is computed before all of this passes, so a bad config
fails in a dry run, in seconds.

The run's name is the config's name: the ``-c`` name, the file's stem for a path, or, for a run's own written
``<run>/config.yaml``, the name recorded in its first line (so re-planning it addresses the same run folder).
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlvr.config import aliases, checks, schema, secrets
from rlvr.config.files import compose, find_config_file, load_yaml, locate_key, run_record_name
from rlvr.errors import ConfigError
from rlvr.steps.index import StepInfo

_OVERRIDE = re.compile(
    r"^(?P<op>[+~]?)(?P<key>[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*)(=(?P<value>.*))?$", re.DOTALL
)


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


def register_resolvers() -> None:
    """The arithmetic resolvers NeMo-RL's example configs use (``nemo_rl/utils/config.py``), e.g.
    ``train_mb_tokens: ${mul:${policy.max_total_sequence_length}, ${policy.train_micro_batch_size}}``."""
    arithmetic = {
        "add": lambda a, b: a + b,
        "sub": lambda a, b: a - b,
        "mul": lambda a, b: a * b,
        "div": lambda a, b: a / b,
        "max": lambda a, b: max(a, b),
    }
    # OmegaConf 2.4 renamed register_new_resolver to register_resolver (whose 2.1-2.3 form is the legacy API).
    modern = "replace" in inspect.signature(OmegaConf.register_resolver).parameters
    register = OmegaConf.register_resolver if modern else OmegaConf.register_new_resolver
    for name, fn in arithmetic.items():
        if not OmegaConf.has_resolver(name):
            register(name, fn)


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


def _literal_secrets(unresolved: dict) -> list[str]:
    try:
        secrets.check_no_literal_secrets(unresolved)
    except ConfigError as exc:
        return [str(exc)]
    return []


def _resolve(cfg, schema_name: str) -> tuple[dict, dict, list[str]]:
    """(unresolved, resolved) containers and the problems found on the way (literal secrets, upstream spellings).

    The schema's defaults are filled before interpolation, so that a default may refer to another key
    (``${policy.max_total_sequence_length}``); literal secrets are looked for in what the user wrote, before them.
    """
    register_resolvers()
    try:
        unresolved = OmegaConf.to_container(cfg, resolve=False)
        unresolved.pop("defaults", None)
        problems = _literal_secrets(unresolved) + aliases.apply(unresolved)
        schema.fill_defaults(unresolved, schema.load_schema(schema_name))
        resolved = OmegaConf.to_container(OmegaConf.create(unresolved), resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        msg = str(getattr(exc, "msg", exc)).splitlines()[0]
        raise ConfigError(f"cannot resolve '{key}': {msg}") from None
    return unresolved, resolved, problems


def load_step_config(step: StepInfo, config: str | None = None, overrides: list[str] | None = None) -> StepConfig:
    """Resolve and validate ``step``'s config ``config`` (name or path; default: the manifest's default)."""
    overrides = list(overrides or [])
    config = config or step.default_config
    path = find_config_file(config, step.config_dir)
    composed = compose(path)
    cfg = _apply_overrides(composed.cfg, overrides)
    unresolved, resolved, messages = _resolve(cfg, step.config_schema)
    where = _where(composed.files, overrides)
    messages += schema.violations(resolved, step.config_schema, where)
    failed = checks.run_checks(step.id, resolved, inputs_valid=not messages)
    messages += [str(exc) for exc in failed]
    if messages:
        error = ConfigError(
            f"invalid config ({len(messages)} problem{'s' * (len(messages) > 1)}):\n  " + "\n  ".join(messages)
        )
        # The manifest's error name of the first cross-field failure that has one (tests and tools match on it).
        error.code = next((exc.code for exc in failed if exc.code), None)
        raise error
    name = run_record_name(path, step.id) or path.stem
    return StepConfig(step.id, name, path, composed.files, overrides, resolved, unresolved)


def complete_config(partial: dict, schema_name: str = "rlvr_config.schema.yaml") -> dict:
    """``partial`` with every missing key filled from the schema's defaults and interpolation resolved, exactly
    as :func:`load_step_config` does (without validation): the config an engine builder receives, for code that
    builds one from a few keys (tests)."""
    _, resolved, _ = _resolve(OmegaConf.create(partial), schema_name)
    return resolved
