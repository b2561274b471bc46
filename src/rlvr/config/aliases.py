"""Upstream spellings folded into rlvr's keys, on the config as written (before the schema's defaults).

* ``grpo.num_val_generations_per_prompt`` (Nemotron) is ``grpo.val_num_generations_per_prompt`` (NeMo-RL), and
  ``grpo.stop_at_validation_threshold`` (NeMo-RL's example configs) is ``grpo.stop_at_validation_metric_threshold``:
  the upstream spelling is copied to rlvr's key; both written with different values is an error.
* Nemotron's ``nemo_gym.yaml`` describes its servers as NeMo-Gym config blocks under ``env.nemo_gym``
  (``math_with_judge: {resources_servers: {math_with_judge: {...}}}``). When ``env.nemo_gym.resource_servers`` is
  empty, each block whose server type rlvr can start locally becomes ``resource_servers.<name> = {url: null,
  kind}``; a type rlvr cannot start, a judge rlvr's math server does not have, or a block beside a non-empty
  ``resource_servers`` (it would not be read) is an error naming the block.
"""

from __future__ import annotations

from typing import Any

_RENAMED = {
    ("grpo", "num_val_generations_per_prompt"): ("grpo", "val_num_generations_per_prompt"),
    ("grpo", "stop_at_validation_threshold"): ("grpo", "stop_at_validation_metric_threshold"),
}

# NeMo-Gym resource-server types with a local rlvr verifier of the same behaviour.
GYM_SERVER_KINDS = {"math_with_judge": "math", "code_gen": "code"}

# Keys of env.nemo_gym that are rlvr's own settings, not NeMo-Gym server blocks.
_GYM_SETTINGS = {
    "config_paths",
    "resource_servers",
    "agent_to_server",
    "max_concurrent_requests",
    "retry_backoff_s",
    "thinking_tags",
    "request_timeout_s",
    "max_retries",
    "num_gpu_nodes",
    "is_trajectory_collection",
    "rollout_max_attempts_to_avoid_lp_nan",
    "skip_venv_if_present",
    "port_range_low",
    "port_range_high",
    "invalid_tool_call_patterns",
    "policy_model",
}


def apply(cfg: dict[str, Any]) -> list[str]:
    """Fold upstream spellings into ``cfg`` (in place); the problems found, one message each."""
    problems = []
    for (section, old), (_, new) in _RENAMED.items():
        node = cfg.get(section)
        if not isinstance(node, dict) or node.get(old) is None:
            continue
        if node.get(new) is not None and node[new] != node[old]:
            problems.append(
                f"{section}.{old} = {node[old]!r} (the upstream spelling) contradicts {section}.{new} = "
                f"{node[new]!r}; write only {section}.{new}"
            )
        else:
            node[new] = node[old]
    problems.extend(_gym_server_blocks(cfg))
    return problems


def _gym_server_blocks(cfg: dict[str, Any]) -> list[str]:
    gym = (cfg.get("env") or {}).get("nemo_gym")
    if not isinstance(gym, dict):
        return []
    blocks = {name: block for name, block in gym.items() if name not in _GYM_SETTINGS and isinstance(block, dict)}
    if gym.get("resource_servers"):
        return [
            f"env.nemo_gym.{name} (a NeMo-Gym server block) is not read when env.nemo_gym.resource_servers is "
            f"set; describe the server under resource_servers.{name} instead"
            for name in blocks
        ]
    problems, servers = [], {}
    for name, block in blocks.items():
        for server_type, settings in (block.get("resources_servers") or {}).items():
            key = f"env.nemo_gym.{name}.resources_servers.{server_type}"
            if server_type not in GYM_SERVER_KINDS:
                problems.append(
                    f"{key}: rlvr cannot start a '{server_type}' server locally (it can: "
                    f"{', '.join(GYM_SERVER_KINDS)}); run it yourself and set "
                    f"env.nemo_gym.resource_servers.{name}.url"
                )
            elif isinstance(settings, dict) and settings.get("should_use_judge"):
                problems.append(
                    f"{key}.should_use_judge=true: rlvr's local math server has no LLM judge; set it to "
                    f"false or point env.nemo_gym.resource_servers.{name}.url at a judged server"
                )
            else:
                servers[name] = {"url": None, "kind": GYM_SERVER_KINDS[server_type]}
    if servers and not problems:
        gym["resource_servers"] = servers
    return problems
