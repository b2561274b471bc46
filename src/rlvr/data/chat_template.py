"""Which chat template formats the prompts: ``policy.tokenizer.chat_template`` (``chat_template`` in rl_prep).

Values (resolved by :func:`resolve_chat_template`):

* absent / null: the tokenizer's own template (``tokenizer_config.json`` or ``chat_template.jinja``);
* ``default``: the tokenizer's own template when it has one (as NeMo-RL reads ``default``), otherwise
  :data:`PLAIN_CHAT_TEMPLATE`, a plain built-in template for base models::

      <bos>{system}\\n\\nUser: {user}\\nAssistant:

  (no system line without a system prompt; ``<bos>`` only when the tokenizer has a BOS token, because rl_prep's
  prompts are encoded with ``add_special_tokens=False``);
* a path to a ``.jinja`` file (relative to the current folder), read as UTF-8;
* any other text containing ``{{`` or ``{%``: a literal Jinja template.

The template is compiled here, so a syntax error names the key and the template line before any data is read.
When the template used differs from the tokenizer's own, rl_prep writes the tokenizer with it under
``rl_prep/tokenizer/`` (:func:`write_tokenizer_with_template`); the GRPO step then loads that folder, so the
checkpoints and the exported HF folder carry the template the prompts were made with.

``chat_template_kwargs`` (NeMo-RL) are extra variables for every ``apply_chat_template`` call (for example
``enable_thinking: false`` for Qwen3 templates).
"""

from __future__ import annotations

import json
from pathlib import Path

from rlvr.errors import ConfigError

PLAIN_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}User: {{ message['content'] }}\n"
    "{% elif message['role'] == 'assistant' %}Assistant: {{ message['content'] }}"
    "{% if eos_token %}{{ eos_token }}{% endif %}\n"
    "{% else %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

#: Arguments of ``apply_chat_template`` that rl_prep sets itself; a kwarg may not override them.
_RESERVED_KWARGS = frozenset(
    {
        "conversation",
        "tokenize",
        "add_generation_prompt",
        "chat_template",
        "tools",
        "return_dict",
        "continue_final_message",
    }
)


def _compile(text: str, key: str, where: str) -> str:
    """Check that ``text`` parses as Jinja (as transformers compiles it); return it unchanged."""
    import jinja2  # transformers' own dependency for chat templates

    try:
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(text)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{key}: {where} is not a valid Jinja template: line {exc.lineno}: {exc.message}") from None
    return text


def resolve_chat_template(value: object, key: str, own: str | None) -> str | None:
    """The template text to use for ``key``'s ``value``, given the tokenizer's ``own`` template (None if none)."""
    if value is None:
        return own
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{key} must be 'default', a .jinja file or a Jinja template (or null for the "
            f"tokenizer's own), got {value!r}"
        )
    if value.strip() == "default":
        return own or PLAIN_CHAT_TEMPLATE
    if "{{" in value or "{%" in value:
        return _compile(value, key, "the literal template")
    path = Path(value)
    if path.suffix in (".jinja", ".j2") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"{key}={value!r}: no such file (relative paths are resolved against {Path.cwd()})")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{key}={value!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        if not text.strip():
            raise ConfigError(f"{key}={value!r} is empty; give a Jinja chat template")
        return _compile(text, key, f"the file {value}")
    raise ConfigError(
        f"{key}={value!r} is not 'default', not a .jinja file and not a Jinja template (it has no "
        "'{{' or '{%'); give one of those, or null for the tokenizer's own template"
    )


def check_template_kwargs(value: object, key: str) -> dict:
    """``chat_template_kwargs`` as a dict (empty for null); reserved argument names are refused."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(name, str) for name in value):
        raise ConfigError(
            f"{key} must be a mapping of template variables (e.g. {{enable_thinking: false}}) or null, got {value!r}"
        )
    reserved = sorted(set(value) & _RESERVED_KWARGS)
    if reserved:
        raise ConfigError(f"{key}.{reserved[0]} is set by rl_prep itself and cannot be overridden; remove it")
    return dict(value)


def missing_template_message(folder: object, dataset_key: str, template_key: str, *, prompt_file_helps: bool) -> str:
    """The error for a tokenizer without a chat template: which keys fix it."""
    fixes = [
        f"{template_key}=default (a plain built-in template for base models: 'User: ...\\nAssistant:')",
        f"{template_key}=<a .jinja file or a literal Jinja template>",
    ]
    if prompt_file_helps:
        fixes.append(
            f"{dataset_key}.prompt_file=<a file with one {{}} for the problem> (the prompt is then that "
            "text alone, for a base model)"
        )
    return (
        f"the tokenizer in {folder} has no chat template, so the prompts of {dataset_key} cannot be formatted; "
        "set one of: " + "; ".join(fixes)
    )


def write_tokenizer_with_template(source: Path, target: Path, template: str) -> None:
    """Copy the tokenizer files of ``source`` into ``target`` with ``template`` as their chat template.

    transformers reads the template from ``chat_template.jinja`` (4.50+) or from ``tokenizer_config.json``
    (older); both are written with the same text so every version loads the same template. Other
    ``chat_template*`` files (a processor's ``chat_template.json``) are dropped so that none can take precedence.
    """
    from rlvr.convert.artifact import copy_tokenizer_assets

    copy_tokenizer_assets(Path(source), target)
    for stale in target.glob("chat_template*"):
        stale.unlink()
    (target / "chat_template.jinja").write_text(template, encoding="utf-8")
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    config["chat_template"] = template
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def with_prepared_tokenizer(cfg: dict, data_dir: Path) -> dict:
    """``cfg`` with ``policy.tokenizer.name`` set to rl_prep's ``tokenizer/`` when rl_prep wrote one.

    rl_prep writes it only when the prompts were made with a template other than the tokenizer's own; loading
    it in GRPO makes every checkpoint (and so the HF export) carry that template. The token ids are the same.
    """
    folder = Path(data_dir) / "tokenizer"
    if not folder.is_dir():
        return cfg
    policy = dict(cfg["policy"])
    policy["tokenizer"] = {**(policy.get("tokenizer") or {}), "name": str(folder)}
    return {**cfg, "policy": policy}
