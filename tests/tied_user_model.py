"""A user's HF model folder like the small Qwen2/2.5 models: tied embeddings, bf16 weights, a byte-level BPE
tokenizer with a ChatML chat template. Built locally (no downloads), small enough for CPU tests.

The tiny pipeline's own policy is untied and float32, so it never exercises the tied / bf16 paths; these tests
use this folder instead.
"""

from __future__ import annotations

from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# What the BPE merges are learnt from: the arithmetic prompts and answers the tests use.
CORPUS = [f"What is {a} + {b}? The answer is \\boxed{{{a + b}}}." for a in range(30) for b in range(0, 30, 7)]


def build_bpe_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer (Qwen2's kind: any byte sequence encodes), trained on :data:`CORPUS`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHAT_TEMPLATE
    )


def make_tied_qwen2(tokenizer, *, seed: int = 0, hidden_size: int = 64, layers: int = 2):
    """A random ``Qwen2ForCausalLM`` with ``tie_word_embeddings`` and bf16 weights (config ``dtype: bfloat16``)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="bfloat16",
    )
    config.architectures = ["Qwen2ForCausalLM"]
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # biases and norms too, so a tensor put in the wrong place changes values
        for param in model.parameters():
            param.normal_(0.0, 0.1)
    return model.to(torch.bfloat16).eval()


def save_tied_user_model(folder: Path, *, seed: int = 0, hidden_size: int = 64, layers: int = 2) -> Path:
    """Write the user's folder (``config.json`` with ``dtype: bfloat16``, ``model.safetensors``, tokenizer files
    with the chat template) and return it."""
    tokenizer = build_bpe_tokenizer()
    model = make_tied_qwen2(tokenizer, seed=seed, hidden_size=hidden_size, layers=layers)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)
