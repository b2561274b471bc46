"""Helpers shared by the data tests (a module with a unique name: test folders are not packages)."""

from __future__ import annotations

import json
from pathlib import Path

# Each marker is one special token of the char tokenizer; every other character is one token. So a prompt's
# token count is len(text) - sum over markers of (len(marker) - 1): easy to compute by hand.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
MARKERS = ("<|system|>", "<|user|>", "<|assistant|>")

# A Qwen2.5-shaped chat template (system default, <|im_start|>/<|im_end|> turns) with Qwen3's enable_thinking switch.
QWEN_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message.role != 'system' or not loop.first %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def expected_tokens(text: str) -> int:
    """Token count of ``text`` under the char tokenizer of ``conftest.char_tokenizer_dir``."""
    return len(text) - sum(text.count(m) * (len(m) - 1) for m in MARKERS)


def write_jsonl(path: Path, rows: list) -> Path:
    """Write rows (dicts, or raw strings written as they are) one per line."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]
