"""Configs for engine builders called directly: the keys a test sets, every other key its schema default.

The engine reads each key with ``cfg[key]`` (the loader has filled every default), so a test hands it what the
loader would: :func:`rlvr.config.loader.complete_config` fills and resolves the schema's defaults.
"""

from __future__ import annotations

from typing import Any

from rlvr.config.loader import complete_config


def policy_config(**keys: Any) -> dict:
    """The ``policy`` section: ``keys`` (nested sections merged with their defaults), the rest as the schema says."""
    return complete_config({"policy": keys})["policy"]


def env_config(**keys: Any) -> dict:
    """The ``env`` section: ``keys`` over the schema's defaults."""
    return complete_config({"env": keys})["env"]
