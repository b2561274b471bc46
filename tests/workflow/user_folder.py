"""What a laptop user brings: a small Qwen2-style HF folder (byte-level BPE tokenizer, ChatML chat template, tied
embeddings, bf16 weights) and math JSONL files. Built locally, nothing downloaded."""

from __future__ import annotations

import json
import random
from pathlib import Path

# Qwen2's ChatML template, shortened: system/user/assistant turns and the generation prompt.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def math_rows(count: int, seed: int) -> list[dict]:
    """Products with 6- to 7-digit answers: a random policy's few tokens never hit one by chance."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randint(1000, 9999), rng.randint(100, 999)
        rows.append({"problem": f"What is {a} * {b}? Put the answer in \\boxed{{}}.", "expected_answer": str(a * b)})
    return rows


def write_math_data(folder: Path, train: int = 64, val: int = 16) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, count, seed in (("train", train, 1), ("val", val, 2)):
        path = folder / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in math_rows(count, seed)))
        paths.append(path)
    return paths[0], paths[1]


def write_user_hf_folder(folder: Path, seed: int = 0) -> Path:
    """A random Qwen2ForCausalLM (hidden 32, 2 layers, GQA 4/2, tied embeddings) saved in bfloat16."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    corpus = [r["problem"] + " " + r["expected_answer"] for r in math_rows(200, seed + 7)]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=300, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIALS[1:],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    config.architectures = ["Qwen2ForCausalLM"]
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
