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
