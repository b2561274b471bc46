"""Which resource server scores a row: from the row's ``agent_ref.name`` to a server of ``env.nemo_gym``.

In Gym, a row names its *agent* and the agent's config names the resource server it verifies with (e.g. agent
``math_with_judge_simple_agent`` has ``resources_server: {name: math_with_judge}``). We have no agents, so the
agent name is resolved to a configured server (``env.nemo_gym.resource_servers``) by the first rule that applies:

1. ``agent_to_server[agent]`` — an explicit map (``env.nemo_gym.agent_to_server``, a proposed key, or the
   client's ``agent_to_server`` argument);
2. the agent's ``resources_server.name`` in a Gym config file of ``env.nemo_gym.config_paths`` (top-level key =
   agent name, then ``responses_api_agents: {<impl>: {resources_server: {name: ...}}}``);
3. the agent name itself, when a server has that name;
4. the agent name without a ``_simple_agent`` or ``_agent`` suffix (``code_gen_simple_agent`` -> ``code_gen``).

A name no rule resolves to a configured server is a :class:`~rlvr.errors.ConfigError` that lists the configured
servers and says how to add a mapping; there is no fallback server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from rlvr.errors import ConfigError, DataError

_SUFFIXES = ("_simple_agent", "_agent")


def agents_in_gym_config(path: Path, key: str) -> dict[str, str]:
    """``{agent name: resource server name}`` declared by one Gym config file (``key`` names it in errors)."""
    if not path.is_file():
        raise ConfigError(
            f"{key}: Gym config file {str(path)!r} not found (paths are relative to the working "
            f"directory {str(Path.cwd())!r})"
        )
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: {path} is not valid YAML: {exc}") from None
    agents: dict[str, str] = {}
    for name, block in (document or {}).items() if isinstance(document, dict) else ():
        impls = block.get("responses_api_agents") if isinstance(block, dict) else None
        for impl in (impls or {}).values() if isinstance(impls, dict) else ():
            server = impl.get("resources_server") if isinstance(impl, dict) else None
            if isinstance(server, dict) and isinstance(server.get("name"), str):
                agents[str(name)] = server["name"]
    return agents


class AgentRouter:
    """Resolves ``agent_ref.name`` to one of ``servers`` (see the module docstring for the rules)."""

    def __init__(
        self,
        servers: Sequence[str],
        agent_to_server: Mapping[str, str] | None = None,
        config_paths: Sequence[str] = (),
    ) -> None:
        self.servers = list(servers)
        self.explicit = dict(agent_to_server or {})
        for agent, server in self.explicit.items():
            if server not in self.servers:
                raise ConfigError(
                    f"env.nemo_gym.agent_to_server.{agent}: server {server!r} is not configured; "
                    f"configured resource servers: {', '.join(self.servers) or '(none)'}"
                )
        self.from_configs: dict[str, str] = {}
        for i, path in enumerate(config_paths):
            self.from_configs.update(agents_in_gym_config(Path(path), f"env.nemo_gym.config_paths[{i}]"))
        self._cache: dict[str, str] = {}

    def server_for(self, agent: str) -> str:
        """The configured server that scores rows of ``agent``."""
        if agent in self._cache:
            return self._cache[agent]
        candidates = [self.explicit.get(agent), self.from_configs.get(agent), agent]
        candidates += [agent[: -len(suffix)] for suffix in _SUFFIXES if agent.endswith(suffix)]
        for candidate in candidates:
            if candidate in self.servers:
                self._cache[agent] = candidate
                return candidate
        declared = self.from_configs.get(agent)
        hint = f" (its Gym config names server {declared!r}, which is not configured)" if declared else ""
        raise ConfigError(
            f"agent {agent!r} maps to no configured resource server{hint}; configured: "
            f"{', '.join(self.servers) or '(none)'}. Add env.nemo_gym.resource_servers.<server> = {{url, kind}}, "
            f"name the agent in env.nemo_gym.agent_to_server, or list a Gym config declaring it in "
            f"env.nemo_gym.config_paths"
        )


def gym_row_of(row: Mapping[str, Any], index: int) -> Mapping[str, Any]:
    """The Gym row inside a canonical rl_prep row (its ``gym`` field), or ``row`` itself when it is a Gym row."""
    gym = row.get("gym", row)
    if not isinstance(gym, Mapping) or "responses_create_params" not in gym:
        raise DataError(
            f"row {index} is not a nemo_gym row: expected a canonical row with a 'gym' object (rl_prep "
            f"writes it for env_name nemo_gym) or a Gym row with 'responses_create_params'; keys: "
            f"{sorted(row)}"
        )
    return gym


def agent_of(gym_row: Mapping[str, Any], index: int) -> str:
    """``agent_ref.name`` of a Gym row (rl_prep fills it from ``data.default_agent_ref`` when missing)."""
    ref = gym_row.get("agent_ref")
    name = ref.get("name") if isinstance(ref, Mapping) else None
    if not isinstance(name, str) or not name:
        raise DataError(
            f"row {index}: Gym row has no agent_ref.name; add agent_ref to the row or set "
            "data.default_agent_ref and re-run data preparation"
        )
    return name
