"""The three shapes of the GRPO step comparison, and the random Llama policies of the two larger ones.

``tiny`` is the tiny SFT policy (0.8M parameters) at its benchmark shape. ``20M`` and ``60M`` are Llama-style
models (RoPE, GQA, SwiGLU, RMSNorm, untied output layer) with random weights, built here from a seed with the
tiny character tokenizer (29 tokens), so nothing is downloaded. A random model draws every token about
uniformly, so its samples stop at EOS after a geometric number of tokens or at the length cap: the rows of one
step have the spread of lengths that padding wastes work on, as a real policy's do. Uniform draws would stop
after about 17 tokens (EOS draws a little above 1/29), far short of 60M's 128-token cap, so there the EOS
probability is set to ``eos_probability`` = 1/64 at every position (:func:`set_eos_probability`): samples
then run about half the cap on average and a quarter of them reach it.

The rollouts per step shrink with the model so that a step of both engines fits a shared 2-core machine
(at 60M one step of TRL's takes about half a minute on one thread); both engines always run the same shape.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Size:
    """One benchmark shape: the model, the generation length and the rollouts of a GRPO step."""

    name: str
    model: dict[str, Any] | None  # LlamaConfig fields of a random model; None: the tiny SFT policy
    new_tokens: int
    prompts: int
    generations: int
    micro_batch: int
    steps: int  # GRPO steps per engine and round (the first --warmup of them are not timed)
    eos_probability: float | None = None  # of a random model at every position (None: as initialised)
    lr: float = 3e-5  # AdamW learning rate, constant, in both engines

    @property
    def rollouts(self) -> int:
        return self.prompts * self.generations

    @property
    def max_total_length(self) -> int:
        return 64 + self.new_tokens  # the tiny prompts are at most 64 tokens (data.max_input_seq_length)


SIZES = {
    s.name: s
    for s in (
        Size("tiny", None, new_tokens=8, prompts=8, generations=8, micro_batch=32, steps=12),
        Size(
            "20M",
            dict(
                hidden_size=512,
                intermediate_size=1408,
                num_hidden_layers=7,
                num_attention_heads=8,
                num_key_value_heads=4,
            ),
            new_tokens=64,
            prompts=4,
            generations=4,
            micro_batch=8,
            steps=4,
        ),
        Size(
            "60M",
            dict(
                hidden_size=768,
                intermediate_size=2048,
                num_hidden_layers=9,
                num_attention_heads=12,
                num_key_value_heads=4,
            ),
            new_tokens=128,
            prompts=2,
            generations=4,
            micro_batch=4,
            steps=3,
            eos_probability=1 / 64,
        ),
    )
}


def our_overrides(size: Size) -> list[str]:
    """The rlvr config keys of ``size`` (on top of the tiny config and the benchmark's fixed keys)."""
    return [
        f"grpo.num_prompts_per_step={size.prompts}",
        f"grpo.num_generations_per_prompt={size.generations}",
        f"policy.train_global_batch_size={size.rollouts}",
        f"policy.train_micro_batch_size={size.micro_batch}",
        f"policy.logprob_batch_size={size.micro_batch}",
        f"policy.generation_batch_size={size.rollouts}",
        f"policy.generation.max_new_tokens={size.new_tokens}",
        f"policy.max_total_sequence_length={size.max_total_length}",
        f"policy.generation.vllm_cfg.max_model_len={size.max_total_length}",
        f"policy.optimizer.kwargs.lr={size.lr}",
    ]


def build_random_policy(size: Size, tokenizer_dir: Path, out: Path, seed: int) -> tuple[Path, Path, int]:
    """Save a random ``size.model`` Llama as an HF folder and as a ``checkpoint_megatron`` (bit-identical weights).

    Returns ``(hf folder, checkpoint_megatron root, parameter count)``.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rlvr.convert.hf_megatron import hf_to_megatron

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=size.max_total_length,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
        **size.model,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    if size.eos_probability:
        set_eos_probability(model, tokenizer.eos_token_id, size.eos_probability)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    hf_dir = out / f"{size.name}_hf"
    model.save_pretrained(hf_dir)
    tokenizer.save_pretrained(hf_dir)
    ckpt = hf_to_megatron(str(hf_dir), str(out / f"{size.name}_checkpoint_megatron"))
    return hf_dir, ckpt, sum(p.numel() for p in model.parameters())


def set_eos_probability(model, eos_id: int, probability: float) -> None:
    """Make EOS about ``probability`` likely at every position of a random Llama.

    Hidden dimension 0 of every token embedding becomes 1, far above the other entries (std 0.02), so the
    final normalised state carries a large positive value there at every position. The output row of EOS reads
    that dimension only, so the EOS logit is one constant, chosen against the average log-sum-exp of the other
    logits on a probe batch.
    """
    import torch

    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 1.0
        model.lm_head.weight[eos_id] = 0.0
        probe = torch.arange(model.config.vocab_size).repeat(4, 1)
        hidden = model.model(input_ids=probe).last_hidden_state
        others = torch.cat([model.lm_head.weight[:eos_id], model.lm_head.weight[eos_id + 1 :]])
        rest = (hidden @ others.T).logsumexp(-1).mean()
        eos_logit = float(rest) + math.log(probability / (1 - probability))
        model.lm_head.weight[eos_id, 0] = eos_logit / float(hidden[..., 0].mean())
