"""Fixtures shared by the conversion tests: tiny HF model folders."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from convert_fixtures import make_hf_model, save_tiny_tokenizer


@pytest.fixture
def hf_folder(tmp_path: Path) -> Callable[..., tuple[Path, object]]:
    """Factory: save a tiny model (and tokenizer) as an HF folder; returns ``(folder, model)``."""

    def make(family: str = "llama", *, tied: bool = False, kv_heads: int = 2, tokenizer: bool = True, **overrides):
        model = make_hf_model(family, tied=tied, kv_heads=kv_heads, **overrides)
        folder = tmp_path / f"hf_{family}_{'tied' if tied else 'untied'}_kv{kv_heads}"
        model.save_pretrained(folder)
        if tokenizer:
            save_tiny_tokenizer(folder)
        return folder, model

    return make
