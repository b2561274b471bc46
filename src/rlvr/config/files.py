"""Finding and reading step config files: ``-c`` names and paths, ``defaults:`` inheritance, key locations.

Behaviour follows the Nemotron loader (see the CLI spec §2.2–2.3): ``-c`` is a *path* when it contains ``/`` or
ends in ``.yaml``/``.yml`` (relative to the current directory), otherwise a *name* looked up in the step's
``config/`` folder. ``defaults:`` is a string or a list of strings, resolved against the including file's folder,
``_self_`` skipped, ``.yaml`` added when no suffix is given; bases merge first, the file itself last.
Unlike upstream, malformed ``defaults`` entries are errors rather than silently ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from omegaconf import DictConfig, OmegaConf

from rlvr.errors import ConfigError
from rlvr.utils import yaml_loaders
from rlvr.utils.yaml_loaders import load_config_yaml as load_yaml


def is_path_like(arg: str) -> bool:
    """Decide by syntax, as upstream: a path contains ``/`` or ends in ``.yaml``/``.yml``."""
    return "/" in arg or arg.endswith((".yaml", ".yml"))


def available_config_names(config_dir: Path) -> list[str]:
    """Names that ``-c`` accepts for a step (files in its ``config/`` folder)."""
    if not config_dir.is_dir():
        return []
    return sorted(p.stem for p in config_dir.iterdir() if p.suffix in (".yaml", ".yml"))


def find_config_file(arg: str, config_dir: Path) -> Path:
    """Resolve ``-c``: a path (by syntax) relative to the cwd, or a name in ``config_dir``."""
    if is_path_like(arg):
        path = Path(arg).expanduser().resolve()
        if not path.is_file():
            raise ConfigError(f"Config file not found: {arg} (resolved to {path})")
        return path
    for suffix in (".yaml", ".yml"):
        candidate = config_dir / f"{arg}{suffix}"
        if candidate.is_file():
            return candidate.resolve()
    known = ", ".join(available_config_names(config_dir)) or "none"
    raise ConfigError(f"Config '{arg}' not found in {config_dir}. Tried: {arg}.yaml, {arg}.yml. Available: {known}")


def read_yaml_mapping(path: Path) -> dict:
    """Parse one YAML file that must hold a mapping; syntax errors name the file and line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"Cannot read config file {path}: {exc.strerror}") from None
    try:
        data = load_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {exc.problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must hold a mapping of keys, not a {type(data).__name__}")
    return data


@dataclass
class ComposedConfig:
    """A config after ``defaults:`` merging, before overrides and interpolation."""

    cfg: DictConfig
    files: list[Path] = field(default_factory=list)  # every file read, bases first


def _default_entries(raw: dict, path: Path) -> list[Path]:
    entries = raw.pop("defaults", None)
    if entries is None:
        return []
    if isinstance(entries, str):
        entries = [entries]
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: 'defaults' must be a file name or a list of file names")
    bases = []
    for entry in entries:
        if not isinstance(entry, str):
            raise ConfigError(f"{path}: every 'defaults' entry must be a file name, got {entry!r}")
        if entry == "_self_":
            continue
        base = Path(entry)
        if not base.suffix:
            base = base.with_suffix(".yaml")
        base = (path.parent / base).resolve()
        if not base.is_file():
            raise ConfigError(f"Base config '{base}' referenced from {path} does not exist")
        bases.append(base)
    return bases


def compose(path: Path, _chain: tuple[Path, ...] = ()) -> ComposedConfig:
    """Load ``path`` with its ``defaults:`` bases merged underneath (deep merge; lists replace)."""
    path = path.resolve()
    if path in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, path))
        raise ConfigError(f"Cyclic config inheritance detected: {cycle}")
    raw = read_yaml_mapping(path)
    bases = _default_entries(raw, path)
    merged = OmegaConf.create({})
    files: list[Path] = []
    for base in bases:
        sub = compose(base, (*_chain, path))
        merged = OmegaConf.merge(merged, sub.cfg)
        files.extend(f for f in sub.files if f not in files)
    merged = OmegaConf.merge(merged, OmegaConf.create(raw))
    files.append(path)
    return ComposedConfig(cfg=merged, files=files)


# First line of a run's written config (``nemotron steps run`` writes ``<run>/config.yaml``):
# ``# <step id> -c <config name> <overrides...>``.
_RUN_RECORD = re.compile(r"^# (?P<step>\S+) -c (?P<name>[^\s/;]+)")


def run_record_name(path: Path, step_id: str) -> str | None:
    """The config name recorded in a run's written ``config.yaml`` (for ``step_id``), else ``None``."""
    try:
        with path.open() as fh:
            first = fh.readline()
    except OSError:
        return None
    match = _RUN_RECORD.match(first)
    return match["name"] if match and match["step"] == step_id else None


def locate_key(files: list[Path], key_path: tuple[str, ...]) -> str | None:
    """``file:line`` of the last file (highest precedence) that writes ``key_path``, for error messages.

    ``None`` when no file writes it (a top-level error has an empty path; a key may come from a default).
    """
    if not key_path:
        return None
    for path in reversed(files):
        try:
            node = yaml_loaders.compose(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        key_node = None
        for part in key_path:
            if not isinstance(node, yaml.MappingNode):
                node = None
                break
            key_node, node = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), (None, None))
            if node is None:
                break
        if node is not None and key_node is not None:
            return f"{path}:{key_node.start_mark.line + 1}"
    return None
