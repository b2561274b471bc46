"""Shared pieces of the distributed tests: a tiny random Llama, a GRPO-like batch, the policy and loss configs.

A module with a unique name (not ``conftest``), so that ``from dp_helpers import ...`` is never ambiguous."""

from __future__ import annotations

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from tests.unit.schema_config import policy_config

VOCAB = 21
POLICY_CFG = policy_config(
    **{
        "precision": "float32",
        # AdamW (not SGD): its per-coordinate normalisation would amplify any gradient mismatch between the runs.
        "optimizer": {"name": "torch.optim.AdamW", "kwargs": {"lr": 1e-3, "weight_decay": 0.01}},
        "scheduler": [
            {
                "name": "torch.optim.lr_scheduler.LinearLR",
                "kwargs": {"start_factor": 0.5, "end_factor": 1.0, "total_iters": 2},
            }
        ],
        "max_grad_norm": 1.0,  # the first train() call clips (norms 2.7 and 15.7): the global norm must match
        "generation": {"temperature": 0.7, "top_k": 8, "top_p": 0.95},
    }
)
LOSS_CFG = {"reference_policy_kl_penalty": 0.05, "ratio_clip_min": 0.2, "ratio_clip_max": 0.2}


def build_model(seed: int = 0) -> LlamaForCausalLM:
    """hidden 32, 2 layers, GQA 4/2 heads, vocabulary 21, fp32, eval mode."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        initializer_range=0.3,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config).eval()


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character over the model's 21 ids: 4 specials, then ``0-9 + = a b c d x``."""
    vocab = {tok: i for i, tok in enumerate(["<pad>", "<eos>", "<bos>", "<unk>", *"0123456789+=abcdx"])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )


def make_batch(rows: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    """``rows`` right-padded sequences of 5..10 tokens, 3 prompt tokens, one masked-out row, per-row advantages.

    ``prev``/``generation``/``reference`` log-probs are filled by :func:`with_logprobs` from a policy.
    """
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(5, 11, (rows,), generator=g)
    lengths[0] = 10
    attention = (torch.arange(10) < lengths[:, None]).long()
    input_ids = torch.randint(4, VOCAB, (rows, 10), generator=g) * attention
    token_mask = attention.float()
    token_mask[:, :3] = 0
    sample_mask = torch.ones(rows)
    sample_mask[rows // 2 + 1] = 0
    advantages = torch.randn(rows, 1, generator=g).expand(rows, 10).clone()
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "token_mask": token_mask,
        "sample_mask": sample_mask,
        "advantages": advantages,
    }


def with_logprobs(batch: dict[str, torch.Tensor], policy) -> dict[str, torch.Tensor]:
    """Add the three log-prob inputs of ClippedPGLoss, as one GRPO step would (generation = prev + noise)."""
    prev = policy.get_logprobs(batch["input_ids"], batch["attention_mask"], micro_batch_size=4)
    ref = policy.get_logprobs(batch["input_ids"], batch["attention_mask"], micro_batch_size=4, filtered=False)
    noise = 0.05 * torch.randn(prev.shape, generator=torch.Generator().manual_seed(1))
    return {
        **batch,
        "prev_logprobs": prev,
        "generation_logprobs": prev + noise * (prev != 0),
        "reference_policy_logprobs": ref,
    }
