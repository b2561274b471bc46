"""Secrets: recognised by value (what came from the environment), never written, printed or put on a command line.

A config *string* whose value was resolved from an environment variable, ``${oc.env:VAR}`` or any interpolation
that leads to one (``"Bearer ${oc.env:TOK}"``, ``${other.key}`` where ``other.key`` reads the environment), is a
secret, whatever its key is called: ``other: ${oc.env:MY_API_KEY}`` is one, ``max_new_tokens: 64`` and
``tokenizer: /models/tok`` are not. Each form of the config treats it differently:

* printed (``-d``): ``******`` (:func:`redact`);
* written (``<run>/config.yaml``, the stage config files, ``rlvr/config.yaml``): the ``${oc.env:VAR}`` reference
  (:func:`with_secret_references`), so the file can be re-used with ``-c`` and a stage resolves the value from
  its own environment (:func:`resolve_references`); never on a command line, never as a Snakemake param.

Exceptions, kept short on purpose: keys that hold paths or model names (:data:`NON_SECRET_KEYS`) are ordinary
values even when read from the environment (``policy.model_name: ${oc.env:RL_POLICY_MODEL,...}``), because the
workflow needs them to plan (file dependencies, run folders); and numbers or booleans (``${oc.decode:...}``) are
not credentials. Environment variable *names* are a different matter: :func:`is_secret_name` (KEY, TOKEN, ...)
decides which variables the Slurm and Lepton launchers keep out of job records, and which ``env_vars`` entries
must come from the environment.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlvr.errors import ConfigError

SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
REDACTED = "******"

# Dotted key patterns (``*`` = one key or list index) whose environment-derived values stay in clear: paths and
# model names the workflow plans with. Everything else read from the environment is treated as a secret.
NON_SECRET_KEYS = (
    "data.*.data_path",
    "data.*.prompt_file",
    "data.*.system_prompt_file",  # training data
    "tokenizer",
    "policy.tokenizer.name",
    "policy.model_name",
    "hf_model_id",  # models and tokenizers
    "chat_template",
    "policy.tokenizer.chat_template",  # a template text or its .jinja file (an rl_prep input)
    "megatron_path",
    "hf_path",
    "checkpointing.checkpoint_dir",  # checkpoints
    "logger.log_dir",
    "logger.*.log_dir",  # output folders
)

# Literal values in well-known credential formats (Hugging Face, OpenAI, GitHub, AWS access keys, Slack).
_CREDENTIAL_FORMATS = re.compile(
    r"^(hf_[A-Za-z0-9]{30,}|sk-[A-Za-z0-9_\-]{20,}|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,}"
    r"|AKIA[0-9A-Z]{16}|xox[abpr]-[A-Za-z0-9\-]{10,})$"
)
_ENV_CALL = re.compile(r"(?<!\\)\$\{(\s*)oc\.env(\s*):")
_TRACER = "rlvr_env_trace"
_MARK = re.compile(r"__rlvr_env_([0-9a-f]+)__")
_NO_DEFAULT = object()


def is_secret_name(name: str) -> bool:
    """Whether an environment variable's name marks a secret (the Nemotron rule, used for variables only)."""
    return bool(SECRET_NAME.search(str(name)))


def _trace_env(var, default=_NO_DEFAULT):
    # Stands in for oc.env while tracing: a plain-text marker (OmegaConf's grammar and oc.decode accept it) that
    # encodes the variable and its default, so the marker survives ${a.b} copies and string interpolation.
    payload = [str(var)] if default is _NO_DEFAULT else [str(var), default]
    return f"__rlvr_env_{json.dumps(payload).encode().hex()}__"


OmegaConf.register_resolver(_TRACER, _trace_env, replace=True, annotation_validation="off")


def _walk(value: Any, path: tuple = ()):
    """(path, leaf) pairs of a nested dict/list."""
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _walk(sub, (*path, key))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _walk(sub, (*path, i))
    else:
        yield path, value


def _get(tree: Any, path: tuple) -> Any:
    for part in path:
        tree = tree[part]
    return tree


def _set(tree: Any, path: tuple, value: Any) -> None:
    _get(tree, path[:-1])[path[-1]] = value


def is_non_secret_key(path: tuple) -> bool:
    dotted = [str(p) for p in path]
    for pattern in NON_SECRET_KEYS:
        parts = pattern.split(".")
        if len(parts) == len(dotted) and all(p in ("*", d) for p, d in zip(parts, dotted)):
            return True
    return False


def _map_strings(value: Any, fn) -> Any:
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return fn(value) if isinstance(value, str) else value


def _render(traced: str, quoted: bool = False) -> str:
    """A traced string back as config text: markers become ``${oc.env:VAR[,'default']}``, literals escaped."""
    out, pos = [], 0
    for match in _MARK.finditer(traced):
        out.append(_escape(traced[pos : match.start()], quoted))
        var, *default = json.loads(bytes.fromhex(match[1]).decode())
        if not default:
            out.append(f"${{oc.env:{var}}}")
        elif default[0] is None:
            out.append(f"${{oc.env:{var},null}}")
        else:
            out.append(f"${{oc.env:{var},'{_render(str(default[0]), quoted=True)}'}}")
        pos = match.end()
    out.append(_escape(traced[pos:], quoted))
    return "".join(out)


def _escape(text: str, quoted: bool = False) -> str:
    """Literal text as OmegaConf reads it back: ``${`` escaped (and, inside a quoted argument, ``\\`` and ``'``)."""
    if quoted:
        text = text.replace("\\", "\\\\").replace("'", "\\'")
    return text.replace("${", "\\${")


def _may_read_environment(unresolved: dict) -> bool:
    """Whether any string can resolve to a traced value: an oc.env call, or the tracer's own name or marker."""
    return any(
        isinstance(leaf, str) and (_ENV_CALL.search(leaf) or _TRACER in leaf or _MARK.search(leaf))
        for _, leaf in _walk(unresolved)
    )


def env_secrets(resolved: dict, unresolved: dict) -> dict[tuple, str]:
    """``{key path: ${oc.env:...} reference}`` of every secret: a string resolved from the environment."""
    if not _may_read_environment(unresolved):
        return {}  # no secret, and no second resolution of the whole config (a plan asks this three times)
    rewritten = _map_strings(unresolved, lambda s: _ENV_CALL.sub(rf"${{\1{_TRACER}\2:", s))
    try:
        traced = OmegaConf.to_container(OmegaConf.create(rewritten), resolve=True)
        reference = lambda path, leaf: _render(leaf)  # noqa: E731
    except OmegaConfBaseException:
        # The real resolution succeeded, so this cannot happen short of an OmegaConf change; stay on the safe
        # side: every string whose text mentions oc.env is a secret, kept as written.
        traced = _map_strings(unresolved, lambda s: _trace_env("?") if _ENV_CALL.search(s) else s)
        reference = lambda path, leaf: _get(unresolved, path)  # noqa: E731
    return {
        path: reference(path, leaf)
        for path, leaf in _walk(traced)
        if isinstance(leaf, str)
        and _MARK.search(leaf)
        and not is_non_secret_key(path)
        and isinstance(_get(resolved, path), str)
    }


def secret_env_vars(resolved: dict, unresolved: dict) -> list[str]:
    """The environment variables the secrets read (the launchers keep them out of job records too)."""
    return sorted(
        {
            m[1]
            for ref in env_secrets(resolved, unresolved).values()
            for m in re.finditer(r"\$\{oc\.env:([^,}]+)", str(ref))
        }
    )


def redact(resolved: dict, unresolved: dict) -> dict:
    """The resolved config with every secret replaced by ``******``: the form that is printed."""
    out = copy.deepcopy(resolved)
    for path in env_secrets(resolved, unresolved):
        _set(out, path, REDACTED)
    return out


def with_secret_references(resolved: dict, unresolved: dict) -> dict:
    """The resolved config with each secret put back to its ``${oc.env:...}`` reference: the form that is written.

    Every other string is escaped (``${`` → ``\\${``) so that reading the file back with the loader (``-c``) or
    in a stage (:func:`resolve_references`) gives the same values, and only the references are resolved.
    """
    out = _map_strings(resolved, _escape)
    for path, reference in env_secrets(resolved, unresolved).items():
        _set(out, path, reference)
    return out


def resolve_references(cfg: dict, source: str) -> dict:
    """A written config (:func:`with_secret_references`) resolved from this process's environment.

    ``source`` names the file in the error: a variable missing here (a job started without the secret) is one
    clear message, not a traceback.
    """
    try:
        return OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(
            f"{source}: cannot resolve '{key}': {getattr(exc, 'msg', exc)}. Export the variable in "
            f"the environment this stage runs in (on Slurm and Lepton: see docs/slurm.md and "
            f"docs/lepton.md for how secrets reach jobs)"
        ) from None


def config_yaml(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False, width=120, allow_unicode=True)


def check_no_literal_secrets(unresolved: Any) -> None:
    """Refuse what can only be a credential written in clear, where the environment should supply it.

    Two cases, neither decided by a config key's name: an ``env_vars`` entry (the keys there are environment
    variable names, which the launchers also judge by name) whose variable marks a secret, and a literal in a
    well-known credential format (``hf_...``, ``sk-...``, ``ghp_...``, ``AKIA...``).
    """
    for path, value in _walk(unresolved):
        if not isinstance(value, str) or not value or _ENV_CALL.search(value):
            continue
        dotted = ".".join(str(p) for p in path)
        in_env_vars = len(path) >= 2 and path[-2] == "env_vars" and is_secret_name(path[-1])
        if in_env_vars or _CREDENTIAL_FORMATS.match(value.strip()):
            raise ConfigError(
                f"'{dotted}' holds a literal secret; export it in an environment variable and write "
                f"'{path[-1]}: ${{oc.env:YOUR_VAR}}' so it never lands in a config, a job script or a log"
            )
