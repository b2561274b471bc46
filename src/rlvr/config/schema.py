"""JSON Schema validation of step configs, with errors a person can act on.

Schemas live in ``<repo>/schemas/*.schema.yaml`` and refer to each other by file name. Every error names the
key path, where it was written (file:line or the command-line override) and, for an unknown key, the closest
valid key. A key marked ``x-unsupported`` is accepted only at its off value; any other value is reported as
"not supported" rather than as a bare ``const`` mismatch.

Every leaf carries its ``default``: :func:`fill_defaults` writes the schema's defaults into a config once, in the
loader, so the engine reads each key without a second default of its own (:func:`section_defaults` gives the
engine's pure functions the same values). An ``integer`` key refuses ``64.0``: JSON Schema would accept it, but
torch and range() crash on it mid-run.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
from referencing import Registry, Resource

from rlvr.errors import ConfigError
from rlvr.paths import SCHEMA_DIR
from rlvr.utils.yaml_loaders import safe_load


@functools.cache
def _registry() -> Registry:
    resources = []
    for path in sorted(SCHEMA_DIR.glob("*.schema.yaml")):
        doc = load_schema(path.name)  # parsed once, shared with the validators (neither changes it)
        resources.append((doc.get("$id", path.name), Resource.from_contents(doc)))
    # The tiny section's schema ships with its package (rlvr.tiny validates with it too).
    tiny = Path(__file__).resolve().parents[1] / "tiny" / "tiny.schema.json"
    resources.append(("tiny.schema.json", Resource.from_contents(json.loads(tiny.read_text()))))
    return Registry().with_resources(resources)


@functools.cache
def load_schema(name: str) -> dict:
    """The schema document ``schemas/<name>`` (e.g. ``rlvr_config.schema.yaml``)."""
    path = SCHEMA_DIR / name
    if not path.is_file():
        raise ConfigError(f"Schema {name} not found in {SCHEMA_DIR}")
    return safe_load(path.read_text())


def _is_strict_integer(checker, instance) -> bool:
    # JSON Schema counts 64.0 as an integer; a batch size of 64.0 crashes torch at step 1, so refuse it here.
    return isinstance(instance, int) and not isinstance(instance, bool)


def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = load_schema(name)
    base = jsonschema.validators.validator_for(schema)
    cls = jsonschema.validators.extend(base, type_checker=base.TYPE_CHECKER.redefine("integer", _is_strict_integer))
    return cls(schema, registry=_registry())


def _is_section(node: dict) -> bool:
    """An object of the schema's own (not a ``$ref`` to a data entry or the tiny schema) with named keys."""
    types = node.get("type")
    is_object = types == "object" or (isinstance(types, list) and "object" in types)
    return is_object and "properties" in node and "$ref" not in node


def fill_defaults(config: dict, node: dict) -> None:
    """Write the schema's ``default`` of every key missing from ``config`` (in place, recursively).

    A missing section is created when it has keys with defaults. ``$ref`` nodes (data entries, which NeMo-RL fills
    from ``data.default``; the tiny section, which its own package fills) and ``null`` sections are left as they
    are. Values may be interpolations (``${policy.max_total_sequence_length}``): fill before resolving.
    """
    for key, sub in node.get("properties", {}).items():
        if key not in config:
            if "default" in sub:
                config[key] = copy.deepcopy(sub["default"])
            elif _is_section(sub):
                config[key] = {}
                fill_defaults(config[key], sub)
                if not config[key]:
                    del config[key]
        elif isinstance(config[key], dict) and _is_section(sub):
            fill_defaults(config[key], sub)


def section_defaults(name: str, *path: str) -> dict:
    """The defaults of the section at ``path`` of schema ``name`` (e.g. ``loss_fn``), for the engine's builders."""
    node = load_schema(name)
    for part in path:
        node = node["properties"][part]
    out: dict = {}
    fill_defaults(out, node)
    return out


def _dotted(path) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _unknown_key_messages(error, where: Callable[[tuple], str]) -> list[str]:
    allowed = sorted(error.schema.get("properties", {}))
    messages = []
    for key in sorted(set(error.instance) - set(allowed)):
        full = (*error.absolute_path, key)
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = (
            f"did you mean '{_dotted((*error.absolute_path, close[0]))}'?"
            if close
            else (f"valid keys here: {', '.join(allowed)}")
        )
        messages.append(f"unknown key '{_dotted(full)}'{where(full)}: {hint}")
    return messages


def _message(error, where: Callable[[tuple], str]) -> list[str]:
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        return _unknown_key_messages(error, where)
    if "x-unsupported" in error.schema and error.validator in ("const", "maxProperties", "enum", "type"):
        off = error.schema["x-unsupported"]
        return [
            f"'{_dotted(path)}: {error.instance!r}'{where(path)} is not supported by rlvr yet; it is accepted "
            f"for NeMo-RL compatibility only at {off!r} ({error.schema.get('description', '').rstrip('.')})"
        ]
    return [f"'{_dotted(path)}'{where(path)}: {error.message}"]


def violations(config: dict, schema_name: str, where: Callable[[tuple], str] = lambda p: "") -> list[str]:
    """Every schema violation of ``config``, one message each (key path, where it was written, the fix)."""
    validator = _validator(schema_name)
    messages: list[str] = []
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        messages.extend(_message(error, where))
    return list(dict.fromkeys(messages))


def validate(config: dict, schema_name: str, where: Callable[[tuple], str] = lambda p: "") -> None:
    """Raise one :class:`ConfigError` listing every schema violation of ``config``."""
    messages = violations(config, schema_name, where)
    if messages:
        raise ConfigError("invalid config:\n  " + "\n  ".join(messages))


def schema_paths() -> list[Path]:
    return sorted(SCHEMA_DIR.glob("*.schema.yaml"))
