"""Tiny random HF models (every supported family) and a word-level tokenizer for the conversion tests."""

from __future__ import annotations

from pathlib import Path

import torch

VOCAB = 48
TOKENS = ["<pad>", "<s>", "</s>", "<unk>"] + [f"t{i}" for i in range(VOCAB - 4)]


# family -> (config class, model class) names in transformers; Gemma 3 is its text-only causal LM.
CLASSES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM"),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM"),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM"),
    "mistral": ("MistralConfig", "MistralForCausalLM"),
    "phi3": ("Phi3Config", "Phi3ForCausalLM"),
    "gemma2": ("Gemma2Config", "Gemma2ForCausalLM"),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM"),
}


def make_hf_model(family: str, *, tied: bool, kv_heads: int, seed: int = 0, **overrides):
    """A random-initialised causal LM of ``family`` (hidden 64, 2 layers, 4 heads; see :data:`CLASSES`).

    Every tensor, norms and biases included, is redrawn from N(0, 0.1) so that a tensor landing in the wrong
    place (or a norm weight left at its default of 1) changes values the tests compare.
    """
    import transformers

    config_cls, model_cls = (getattr(transformers, name) for name in CLASSES[family])
    kwargs = dict(
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        vocab_size=VOCAB,
        max_position_embeddings=128,
        tie_word_embeddings=tied,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    kwargs.update(overrides)
    attn_implementation = kwargs.pop("attn_implementation", None)
    config = config_cls(**kwargs)
    config.architectures = [model_cls.__name__]
    if attn_implementation:
        config._attn_implementation = attn_implementation
    torch.manual_seed(seed)
    model = model_cls(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    return model.eval()


def save_tiny_tokenizer(folder: Path) -> None:
    """A word-level tokenizer over :data:`TOKENS`, saved with ``save_pretrained`` (no download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(TOKENS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    tokenizer.save_pretrained(folder)
