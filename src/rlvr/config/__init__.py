"""Step configs: one loader (``load_step_config``) for the CLI and the Snakefile, JSON Schema validation and
cross-field checks. See ``loader.py`` for the order of operations."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rlvr.config.loader import StepConfig, load_step_config, parse_override

__all__ = ["StepConfig", "load_step_config", "parse_override"]


def __getattr__(name: str):
    # The loader (jsonschema, the schemas) is imported on first use: every stage imports rlvr.config.secrets to
    # read its stage config, and most need nothing else of this package.
    if name in __all__:
        from rlvr.config import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
