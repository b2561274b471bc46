"""The tiny policy: a small ``LlamaForCausalLM`` (RoPE, GQA, SwiGLU, RMSNorm) sized for a 2-core CPU.

A real transformers class, so that everything downstream (HF generate, checkpoint conversion to Megatron, the
export back to HF) treats it exactly like a production Llama checkpoint, only smaller.
"""

from __future__ import annotations

import torch
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from rlvr.tiny.config import TinyConfig


def make_llama_config(cfg: TinyConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """The architecture from ``cfg.model`` with vocabulary and special-token ids from ``tokenizer``."""
    m = cfg.model
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=m.hidden_size,
        intermediate_size=m.intermediate_size,
        num_hidden_layers=m.num_hidden_layers,
        num_attention_heads=m.num_attention_heads,
        num_key_value_heads=m.num_key_value_heads,
        max_position_embeddings=m.max_position_embeddings,
        rope_parameters={"rope_type": "default", "rope_theta": float(m.rope_theta)},
        tie_word_embeddings=m.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )


def make_tiny_llama(cfg: TinyConfig, tokenizer: PreTrainedTokenizerBase) -> LlamaForCausalLM:
    """A freshly initialised tiny Llama; the same ``cfg.seed`` gives the same weights.

    The initialisation uses a forked RNG seeded with ``cfg.seed``, leaving the caller's global RNG untouched.
    The attached generation config stops at EOS and pads with PAD, so ``generate`` and a saved folder's
    ``generation_config.json`` need nothing more from the caller.
    """
    config = make_llama_config(cfg, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=cfg.sft.max_new_tokens,
    )
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied matrices counted once)."""
    return sum(p.numel() for p in model.parameters())
