"""YAML parsing of step configs, schemas and stage configs: libyaml's parser where PyYAML has it, same values.

Planning (``nemotron steps run ... -d``, and the Snakefile after it) parses the schemas and the step config every
time; PyYAML's pure-Python parser was most of the config loader's time, libyaml's C parser (PyYAML's ``CSafeLoader``)
takes a fraction of it. Both build the same values: the constructor and the resolvers, ``1e-4`` read as a float
included, are PyYAML's Python ones in either case. Only syntax errors are worded differently by libyaml, so a
document it refuses is parsed again by the pure-Python parser, whose message and line:column users see, as before.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_C_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # PyYAML built without libyaml has only the latter


class PureConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e-4`` as a float (YAML 1.1 requires ``1.0e-4``; users write ``1e-4``)."""


class ConfigLoader(_C_SAFE_LOADER):
    """:class:`PureConfigLoader` on libyaml's parser."""


for _loader in (PureConfigLoader, ConfigLoader):
    _loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"),
    )


def _load(text: str, fast: type, pure: type) -> Any:
    try:
        return yaml.load(text, Loader=fast)  # noqa: S506 - safe loaders only
    except yaml.YAMLError:
        return yaml.load(text, Loader=pure)  # noqa: S506 - the error users see (or, if libyaml alone refused, the value)


def load_config_yaml(text: str) -> Any:
    """A step config or a ``key=value`` override's value (``1e-4`` is a float)."""
    return _load(text, ConfigLoader, PureConfigLoader)


def safe_load(text: str) -> Any:
    """``yaml.safe_load``, on libyaml's parser."""
    return _load(text, _C_SAFE_LOADER, yaml.SafeLoader)


def compose(text: str) -> yaml.Node | None:
    """The node tree of a document (keys with their line numbers), on libyaml's parser."""
    try:
        return yaml.compose(text, Loader=_C_SAFE_LOADER)
    except yaml.YAMLError:
        return yaml.compose(text, Loader=yaml.SafeLoader)
