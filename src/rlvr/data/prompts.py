"""Prompt templating, as NeMo-RL's ``math_hf_data_processor`` does it, and prompt token counts.

For a math or code row: ``user = prompt_file.format(problem)`` when ``prompt_file`` is set (a ``str.format``
template with one ``{}``; ``{{``/``}}`` are literal braces), else the problem. With a tokenizer the prompt is its
chat template applied once to ``[system(system_prompt_file)?, user]`` with ``add_generation_prompt=True``, kept as
text; its length is the token count of that text with ``add_special_tokens=False``. Without a tokenizer the prompt
is ``user`` itself and no tokens are counted (a system prompt then has nowhere to go, so it is an error). Which
chat template is used is :mod:`rlvr.data.chat_template`'s business; a tokenizer without any (a base model) needs
``prompt_file``, and the prompt is then the formatted file alone. A ``messages`` row's own system turn replaces
``system_prompt_file`` for that row.

NeMo-Gym rows carry their own conversation (``responses_create_params.input``); prompt files do not apply to them.
With a tokenizer, their prompt is the chat template applied to those turns (for statistics and de-duplication).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path

from rlvr.data.chat_template import missing_template_message, resolve_chat_template
from rlvr.data.config import DatasetSpec
from rlvr.errors import ConfigError

# Chat templates and tokenizers are much faster on batches than one call per row.
_BATCH = 1024


def read_prompt_file(path: str, key: str) -> str:
    """Read a ``prompt_file`` and check it is a ``str.format`` template with exactly one ``{}``."""
    text = _read_text(path, key)
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(text) if field is not None]
        text.format("problem")
    except (ValueError, IndexError, KeyError) as exc:
        raise ConfigError(
            f"{key}={path!r} is not a str.format template with one '{{}}' ({exc!r}); write "
            "literal braces as '{{' and '}}'"
        ) from None
    if fields != [""] and set(fields) != {"0"}:
        raise ConfigError(
            f"{key}={path!r} must contain exactly one '{{}}' where the problem goes, found "
            f"{len(fields)} replacement field(s) {fields}; write literal braces as '{{{{' and '}}}}'"
        )
    return text


def _read_text(path: str, key: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{key}={path!r}: no such file (relative paths are resolved against {Path.cwd()})")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{key}={path!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load_tokenizer(tokenizer_dir: str | Path, chat_template: object = None, template_key: str = "chat_template"):
    """``AutoTokenizer.from_pretrained(tokenizer_dir)`` (a local HF folder) with the configured chat template.

    Returns ``(tokenizer, changed)``: ``tokenizer.chat_template`` is the template to use (None when neither the
    tokenizer nor ``chat_template`` gives one), ``changed`` tells whether it differs from the tokenizer's own.
    """
    from transformers import AutoTokenizer  # heavy import, only when a tokenizer is used

    folder = Path(tokenizer_dir)
    if not folder.is_dir():
        raise ConfigError(f"tokenizer folder {folder} does not exist; pass the policy's HF folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a tokenizer from {folder}: {exc}") from None
    own = getattr(tokenizer, "chat_template", None) or None
    if isinstance(own, dict):  # several named templates: the one called "default", as transformers picks it
        own = own.get("default")
    template = resolve_chat_template(chat_template, template_key, own)
    tokenizer.chat_template = template
    return tokenizer, template != own


def _bos_prefix(tokenizer) -> str:
    """The BOS text the tokenizer would add itself: prompts are encoded with ``add_special_tokens=False``."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos:
        return ""
    with_special = tokenizer("x")["input_ids"]
    without = tokenizer("x", add_special_tokens=False)["input_ids"]
    return bos if len(with_special) > len(without) and with_special[0] == tokenizer.bos_token_id else ""


class PromptBuilder:
    """Turns problems (or Gym chat turns) into prompt texts for one dataset.

    Three modes: no tokenizer (the user text itself); a tokenizer with a chat template (the template applied to
    ``[system?, user]``); a tokenizer without one (base models): ``prompt_file`` alone makes the prompt, after
    the tokenizer's BOS text when it adds one, and a system prompt has nowhere to go.
    """

    def __init__(
        self,
        *,
        template: str | None = None,
        system_prompt: str | None = None,
        tokenizer=None,
        template_kwargs: dict | None = None,
        template_key: str = "chat_template",
    ):
        self.template, self.system_prompt, self.tokenizer = template, system_prompt, tokenizer
        self.chat = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
        self.template_kwargs = dict(template_kwargs or {})
        self.prefix = "" if tokenizer is None or self.chat else _bos_prefix(tokenizer)
        # What to tell a user whose system prompt has nowhere to go.
        self.fix = (
            "pass the tokenizer folder"
            if tokenizer is None
            else f"set a chat template ({template_key}=default or a template)"
        )
        if system_prompt is not None and not self.chat:
            raise ConfigError(
                f"system_prompt_file needs a chat template (it places the system turn); {self.fix} "
                "or remove system_prompt_file"
            )

    def _apply_chat_template(self, conversations: list[list[dict]]) -> list[str]:
        from jinja2 import TemplateError

        texts: list[str] = []
        for start in range(0, len(conversations), _BATCH):
            try:
                texts.extend(
                    self.tokenizer.apply_chat_template(
                        conversations[start : start + _BATCH],
                        tokenize=False,
                        add_generation_prompt=True,
                        **self.template_kwargs,
                    )
                )
            except TemplateError as exc:  # raise_exception() in the template, an undefined variable, ...
                raise ConfigError(
                    f"the chat template failed on these prompts: {exc}; fix the template (or "
                    "chat_template_kwargs) or the rows"
                ) from None
        return texts

    def render(self, problems: Sequence[str], systems: Sequence[str | None] | None = None) -> list[str]:
        """Prompt text per problem (math, code); ``systems[i]`` is row ``i``'s own system prompt (or None)."""
        users = list(problems) if self.template is None else [self.template.format(p) for p in problems]
        own = [] if systems is None else [i for i, text in enumerate(systems) if text is not None]
        if own and not self.chat:
            raise ConfigError(
                f"{len(own)} row(s) carry a system turn (the first is row {own[0]}), which "
                f"needs a chat template to be placed; {self.fix} or remove the system turns"
            )
        if not self.chat:
            return [self.prefix + u for u in users] if self.prefix else users
        shared = [] if self.system_prompt is None else [{"role": "system", "content": self.system_prompt}]
        conversations = []
        for i, user in enumerate(users):
            row_system = None if systems is None else systems[i]
            head = shared if row_system is None else [{"role": "system", "content": row_system}]
            conversations.append([*head, {"role": "user", "content": user}])
        return self._apply_chat_template(conversations)

    def render_turns(self, conversations: Sequence[list[dict]], fallbacks: Sequence[str]) -> list[str]:
        """Prompt text per Gym conversation: the chat template with a tokenizer, else ``fallbacks`` (user texts)."""
        if self.tokenizer is None:
            return list(fallbacks)
        return self._apply_chat_template(list(conversations))

    def count_tokens(self, prompts: Sequence[str]) -> list[int] | None:
        """Token count per prompt (``add_special_tokens=False``, as NeMo-RL), or None without a tokenizer."""
        if self.tokenizer is None:
            return None
        counts: list[int] = []
        for start in range(0, len(prompts), _BATCH):
            encoded = self.tokenizer(list(prompts[start : start + _BATCH]), add_special_tokens=False)["input_ids"]
            counts.extend(len(ids) for ids in encoded)
        return counts


def build_prompt_builder(
    spec: DatasetSpec,
    tokenizer,
    *,
    template_kwargs: dict | None = None,
    template_key: str = "chat_template",
    tokenizer_dir: object = None,
) -> PromptBuilder:
    """The :class:`PromptBuilder` of one dataset, reading its prompt files.

    A tokenizer without a chat template can still format math / code prompts through ``prompt_file``; without
    either, the error names the keys that fix it.
    """
    has_chat = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
    if spec.env_name == "nemo_gym":
        for name in ("prompt_file", "system_prompt_file"):
            if getattr(spec, name) is not None:
                raise ConfigError(
                    f"{spec.key}.{name} does not apply to nemo_gym rows (their conversation is "
                    "responses_create_params.input); set it to null"
                )
        if tokenizer is not None and not has_chat:
            raise ConfigError(missing_template_message(tokenizer_dir, spec.key, template_key, prompt_file_helps=False))
        return PromptBuilder(tokenizer=tokenizer, template_kwargs=template_kwargs)
    if tokenizer is not None and not has_chat and spec.prompt_file is None:
        raise ConfigError(missing_template_message(tokenizer_dir, spec.key, template_key, prompt_file_helps=True))
    template = None if spec.prompt_file is None else read_prompt_file(spec.prompt_file, f"{spec.key}.prompt_file")
    system = (
        None
        if spec.system_prompt_file is None
        else _read_text(spec.system_prompt_file, f"{spec.key}.system_prompt_file")
    )
    try:
        return PromptBuilder(
            template=template,
            system_prompt=system,
            tokenizer=tokenizer,
            template_kwargs=template_kwargs,
            template_key=template_key,
        )
    except ConfigError as exc:
        raise ConfigError(f"{spec.key}: {exc}") from None
