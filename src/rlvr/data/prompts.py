"""Prompt templating, as NeMo-RL's ``math_hf_data_processor`` does it, and prompt token counts.

For a math or code row: ``user = prompt_file.format(problem)`` when ``prompt_file`` is set (a ``str.format``
template with one ``{}``; ``{{``/``}}`` are literal braces), else the problem. With a tokenizer the prompt is its
chat template applied once to ``[system(system_prompt_file)?, user]`` with ``add_generation_prompt=True``, kept as
text; its length is the token count of that text with ``add_special_tokens=False``. Without a tokenizer the prompt
is ``user`` itself and no tokens are counted (a system prompt then has nowhere to go, so it is an error).

NeMo-Gym rows carry their own conversation (``responses_create_params.input``); prompt files do not apply to them.
With a tokenizer, their prompt is the chat template applied to those turns (for statistics and de-duplication).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from pathlib import Path

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
        raise ConfigError(f"{key}={path!r} is not a str.format template with one '{{}}' ({exc!r}); write "
                          "literal braces as '{{' and '}}'") from None
    if fields != [""] and set(fields) != {"0"}:
        raise ConfigError(f"{key}={path!r} must contain exactly one '{{}}' where the problem goes, found "
                          f"{len(fields)} replacement field(s) {fields}; write literal braces as '{{{{' and '}}}}'")
    return text


def _read_text(path: str, key: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"{key}={path!r}: no such file (relative paths are resolved against {Path.cwd()})")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{key}={path!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def load_tokenizer(tokenizer_dir: str | Path):
    """``AutoTokenizer.from_pretrained(tokenizer_dir)`` (a local HF folder), which must have a chat template."""
    from transformers import AutoTokenizer  # heavy import, only when a tokenizer is used

    folder = Path(tokenizer_dir)
    if not folder.is_dir():
        raise ConfigError(f"tokenizer folder {folder} does not exist; pass the policy's HF folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load a tokenizer from {folder}: {exc}") from None
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError(f"the tokenizer in {folder} has no chat template (tokenizer_config.json 'chat_template' "
                          "or chat_template.jinja); prompts are templated with it, as in NeMo-RL")
    return tokenizer


class PromptBuilder:
    """Turns problems (or Gym chat turns) into prompt texts for one dataset."""

    def __init__(self, *, template: str | None = None, system_prompt: str | None = None, tokenizer=None):
        if system_prompt is not None and tokenizer is None:
            raise ConfigError("system_prompt_file needs a tokenizer (its chat template places the system turn); "
                              "pass the tokenizer folder or remove system_prompt_file")
        self.template, self.system_prompt, self.tokenizer = template, system_prompt, tokenizer

    def _apply_chat_template(self, conversations: list[list[dict]]) -> list[str]:
        texts: list[str] = []
        for start in range(0, len(conversations), _BATCH):
            texts.extend(self.tokenizer.apply_chat_template(
                conversations[start:start + _BATCH], tokenize=False, add_generation_prompt=True
            ))
        return texts

    def render(self, problems: Sequence[str]) -> list[str]:
        """Prompt text per problem (math, code)."""
        users = list(problems) if self.template is None else [self.template.format(p) for p in problems]
        if self.tokenizer is None:
            return users
        head = [] if self.system_prompt is None else [{"role": "system", "content": self.system_prompt}]
        return self._apply_chat_template([[*head, {"role": "user", "content": u}] for u in users])

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
            encoded = self.tokenizer(list(prompts[start:start + _BATCH]), add_special_tokens=False)["input_ids"]
            counts.extend(len(ids) for ids in encoded)
        return counts


def build_prompt_builder(spec: DatasetSpec, tokenizer) -> PromptBuilder:
    """The :class:`PromptBuilder` of one dataset, reading its prompt files."""
    if spec.env_name == "nemo_gym":
        for name in ("prompt_file", "system_prompt_file"):
            if getattr(spec, name) is not None:
                raise ConfigError(f"{spec.key}.{name} does not apply to nemo_gym rows (their conversation is "
                                  "responses_create_params.input); set it to null")
        return PromptBuilder(tokenizer=tokenizer)
    template = None if spec.prompt_file is None else read_prompt_file(spec.prompt_file, f"{spec.key}.prompt_file")
    system = None if spec.system_prompt_file is None else _read_text(spec.system_prompt_file,
                                                                     f"{spec.key}.system_prompt_file")
    try:
        return PromptBuilder(template=template, system_prompt=system, tokenizer=tokenizer)
    except ConfigError as exc:
        raise ConfigError(f"{spec.key}: {exc}") from None
