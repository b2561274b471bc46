"""A run profile: Snakemake's options (``config.yaml``) plus rlvr's own launch settings (``launch.yaml``).

Snakemake reads ``config.yaml`` itself and rejects keys it does not know, so what ``nemotron steps run`` needs
beyond Snakemake's options (how to submit the detached controller, which container image to squash and run)
lives in an optional ``launch.yaml`` beside it. Both are plain YAML; every key of a shipped profile is commented.

The executor (``executor:`` in ``config.yaml``, Snakemake's default ``local`` when absent) decides how ``-b``
detaches: a local profile starts Snakemake in the background, a Slurm profile submits it as a batch job.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from rlvr.errors import UserError

LAUNCH_FILE = "launch.yaml"


@dataclass(frozen=True)
class ControllerSettings:
    """The ``-b`` controller job on Slurm: it only waits and submits, so it needs little but must outlive the run."""

    partition: str | None = None
    account: str | None = None
    time: str = "1-00:00:00"
    mem_mb: int = 4000
    cpus: int = 1
    extra: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ContainerSettings:
    """The image the rlvr stage runs in (through pyxis ``srun --container-image``); no image, no container."""

    image: str | None = None
    mounts: list[str] = field(default_factory=list)
    workdir: str | None = None
    python: str = "python"


@dataclass(frozen=True)
class SquashSettings:
    """Where ``.sqsh`` files live and how ``enroot import`` is run (``salloc``: on a compute node)."""

    dir: str | None = None
    via: str = "salloc"
    partition: str | None = None
    account: str | None = None
    time: str = "01:00:00"


@dataclass(frozen=True)
class LaunchSettings:
    controller: ControllerSettings = field(default_factory=ControllerSettings)
    container: ContainerSettings = field(default_factory=ContainerSettings)
    squash: SquashSettings = field(default_factory=SquashSettings)


_SECTIONS = {"controller": ControllerSettings, "container": ContainerSettings, "squash": SquashSettings}
SQUASH_VIA = ("salloc", "srun", "local")


def _load_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of options, got {type(data).__name__}")
    return data


def parse_launch_settings(data: dict[str, Any], source: Path) -> LaunchSettings:
    """Typed launch settings; an unknown section or key is an error naming the file and the known names."""
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise UserError(f"{source}: unknown section(s) {', '.join(unknown)}; known: {', '.join(_SECTIONS)}")
    parsed = {}
    for name, cls in _SECTIONS.items():
        section = data.get(name) or {}
        if not isinstance(section, dict):
            raise UserError(f"{source}: '{name}' must be a mapping")
        known = [f.name for f in fields(cls)]
        bad = sorted(set(section) - set(known))
        if bad:
            raise UserError(
                f"{source}: unknown key(s) {', '.join(f'{name}.{k}' for k in bad)}; "
                f"known keys of '{name}': {', '.join(known)}"
            )
        parsed[name] = cls(**{k: v for k, v in section.items() if v is not None})
    settings = LaunchSettings(**parsed)
    if settings.squash.via not in SQUASH_VIA:
        raise UserError(f"{source}: squash.via must be one of {', '.join(SQUASH_VIA)}, not '{settings.squash.via}'")
    return settings


@dataclass(frozen=True)
class Profile:
    """A profile folder, its Snakemake options and its launch settings."""

    path: Path
    options: dict[str, Any]
    launch: LaunchSettings

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def executor(self) -> str:
        return str(self.options.get("executor") or "local")

    def rule_resources(self, rule: str) -> dict[str, Any]:
        """The resources this profile sets for ``rule``: ``default-resources`` overlaid by ``set-resources``."""
        merged = dict(_as_mapping(self.options.get("default-resources"), "default-resources", self.config_file))
        per_rule = self.options.get("set-resources") or {}
        merged.update(per_rule.get(rule) or {})
        return merged


def _as_mapping(value: Any, key: str, source: Path) -> dict[str, Any]:
    """``default-resources`` may be a mapping or Snakemake's ``["name=value", ...]`` list form."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    if isinstance(value, list):
        pairs = [str(item).partition("=") for item in value]
        return {k.strip(): yaml.safe_load(v) for k, _, v in pairs}
    raise UserError(f"{source}: '{key}' must be a mapping of resource: value")


def load_profile(folder: Path) -> Profile:
    """Read ``folder/config.yaml`` and, when present, ``folder/launch.yaml``."""
    folder = Path(folder)
    options = _load_yaml(folder / "config.yaml")
    launch_file = folder / LAUNCH_FILE
    launch = parse_launch_settings(_load_yaml(launch_file), launch_file) if launch_file.is_file() else LaunchSettings()
    return Profile(path=folder, options=options, launch=launch)
