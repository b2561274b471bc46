"""Step manifests (``steps/**/step.toml``, the Nemotron format) and step-id resolution.

A manifest has ``[step]`` (id, name, category, description, tags), ``[[consumes]]`` / ``[[produces]]``
(type, required — default true —, description), ``[[parameters]]`` (name, default, description, choices) and the
informational ``[[strategies]]``, ``[[errors]]`` and ``[reference]``. Where Nemotron keeps the runspec in a
PEP 723 block of ``step.py``, rlvr keeps it in the manifest's ``[runspec]`` table, plus ``config_schema``: the
JSON Schema its configs are validated against.
"""

from __future__ import annotations

import difflib
import functools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlvr.errors import UserError
from rlvr.paths import STEPS_DIR

# The schema each step's configs are checked against (schemas/<name>).
CONFIG_SCHEMAS = {
    "rl/nemo_rl/rlvr": "rlvr_config.schema.yaml",
    "data_prep/rl_prep": "rl_prep_config.schema.yaml",
    "convert/hf_to_megatron": "convert_config.schema.yaml",
    "convert/megatron_to_hf": "convert_config.schema.yaml",
}


@dataclass
class Artifact:
    type: str
    description: str = ""
    required: bool = True


@dataclass
class Parameter:
    name: str
    description: str = ""
    default: Any = None
    has_default: bool = False
    choices: list[Any] = field(default_factory=list)


@dataclass
class StepInfo:
    id: str
    name: str
    category: str
    description: str
    path: Path
    tags: list[str] = field(default_factory=list)
    consumes: list[Artifact] = field(default_factory=list)
    produces: list[Artifact] = field(default_factory=list)
    parameters: list[Parameter] = field(default_factory=list)
    runspec: dict[str, Any] = field(default_factory=dict)
    strategies: list[dict] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)

    @property
    def config_dir(self) -> Path:
        return self.path / self.runspec.get("config_dir", "config")

    @property
    def default_config(self) -> str:
        return self.runspec.get("default_config", "default")

    @property
    def config_schema(self) -> str:
        return CONFIG_SCHEMAS[self.id]

    @property
    def leaf(self) -> str:
        return self.id.rsplit("/", 1)[-1]

    def to_json(self, *, with_runspec: bool = False) -> dict[str, Any]:
        """The ``steps list --json`` object (key order as upstream); ``steps show`` adds ``runspec``."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "category": self.category,
            "description": self.description,
            "tags": self.tags,
            "path": str(self.path),
            "consumes": [vars(a) for a in self.consumes],
            "produces": [vars(a) for a in self.produces],
            "parameters": [
                {"name": p.name, "default": p.default, "description": p.description, "choices": p.choices}
                for p in self.parameters
            ],
        }
        if with_runspec:
            rs = self.runspec
            out["runspec"] = (
                {
                    "name": rs.get("name"),
                    "image": rs.get("image"),
                    "launch": rs.get("launch"),
                    "config_dir": str(self.config_dir),
                    "default_config": self.default_config,
                    "resources": dict(rs.get("resources", {})),
                }
                if rs
                else None
            )
        return out


def _artifacts(items: list[dict], where: Path) -> list[Artifact]:
    out = []
    for item in items:
        if "type" not in item:
            raise UserError(f"{where}: every [[consumes]]/[[produces]] entry needs a 'type'")
        out.append(Artifact(item["type"], item.get("description", ""), bool(item.get("required", True))))
    return out


def parse_manifest(path: Path) -> StepInfo:
    """Read one ``step.toml``; ids, names and categories default as upstream."""
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: invalid TOML: {exc}") from None
    step = data.get("step", {})
    folder = path.parent
    category = step.get("category", folder.parent.name)
    params = [
        Parameter(p["name"], p.get("description", ""), p.get("default"), "default" in p, list(p.get("choices", [])))
        for p in data.get("parameters", [])
    ]
    return StepInfo(
        id=step.get("id", f"{category}/{folder.name}"),
        name=step.get("name", folder.name.replace("_", " ").title()),
        category=category,
        description=step.get("description", step.get("summary", "")).strip(),
        path=folder.resolve(),
        tags=list(step.get("tags", [])),
        consumes=_artifacts(data.get("consumes", []), path),
        produces=_artifacts(data.get("produces", []), path),
        parameters=params,
        runspec=dict(data.get("runspec", {})),
        strategies=list(data.get("strategies", [])),
        errors=list(data.get("errors", [])),
    )


@functools.cache
def discover(root: Path = STEPS_DIR) -> tuple[StepInfo, ...]:
    """Every manifest under ``root``, sorted by (category, id, path) as upstream."""
    steps = [parse_manifest(p) for p in root.glob("**/step.toml")]
    return tuple(sorted(steps, key=lambda s: (s.category, s.id, str(s.path))))


class UnknownStepError(UserError):
    """A step id that matches no manifest (message carries the suggestions)."""


def resolve_step(step_id: str, steps: tuple[StepInfo, ...] | None = None) -> StepInfo:
    """Exact id, else a unique last component (``rlvr``), else an error with "Did you mean"."""
    steps = discover() if steps is None else steps
    for step in steps:
        if step.id == step_id:
            return step
    by_leaf = [s for s in steps if s.path.name == step_id or s.leaf == step_id]
    if len(by_leaf) == 1:
        return by_leaf[0]
    lines = [f"Unknown step id: {step_id}"]
    if len(by_leaf) > 1:
        lines.append(f"'{step_id}' is ambiguous: {', '.join(s.id for s in by_leaf)}")
    names = {s.id: s.id for s in steps} | {s.leaf: s.id for s in steps}
    close = list(dict.fromkeys(names[m] for m in difflib.get_close_matches(step_id, list(names), n=3, cutoff=0.5)))
    if close:
        lines.append(f"Did you mean: {', '.join(close)}?")
    lines.append("Run `nemotron steps list` to see all available steps.")
    raise UnknownStepError("\n".join(lines))
