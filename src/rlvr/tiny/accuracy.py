"""Accuracy of a tiny policy on math rows, measured the way the RL stage measures reward.

Prompt: the chat template with ``add_generation_prompt=True``. Answer: the generated text up to EOS, special
tokens skipped. Score: math-verify with gold ``\\boxed{expected_answer}`` and Expr+LaTeX extraction of the
prediction (NeMo-RL's ``hf_math_verify``), 1.0 or 0.0. So the sampled accuracy at temperature 1.0 on
``rl_val`` is the starting point of the RL stage's validation curve.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlvr.rewards.math_verifier import check_math


def score_answer(response: str, expected_answer: str) -> float:
    """The RL reward of ``response``: the math verifier of :mod:`rlvr.rewards` (errors score 0)."""
    return check_math(response, expected_answer).reward


def prompt_ids(tokenizer: PreTrainedTokenizerBase, problem: str) -> list[int]:
    """Token ids of the RL prompt for ``problem`` (the template writes BOS; no other special tokens added)."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": problem}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _decode_until_eos(tokenizer: PreTrainedTokenizerBase, ids: torch.Tensor) -> str:
    """Decode ``ids`` ``[T]`` up to (not including) the first EOS."""
    ids = ids.tolist()
    if tokenizer.eos_token_id in ids:
        ids = ids[: ids.index(tokenizer.eos_token_id)]
    return tokenizer.decode(ids, skip_special_tokens=True)


@torch.no_grad()
def generate_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Sequence[str],
    *,
    samples_per_prompt: int = 1,
    temperature: float | None = None,
    max_new_tokens: int = 12,
    seed: int = 0,
    batch_size: int = 256,
) -> list[list[str]]:
    """``samples_per_prompt`` answers per problem: greedy when ``temperature`` is None, else plain sampling.

    Prompts are batched by token length, so no padding enters the attention and the result cannot depend on
    padding side or position-id handling. Sampling uses a forked RNG seeded with ``seed`` (no top-k/top-p).
    """
    encoded = [prompt_ids(tokenizer, p) for p in problems]
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(encoded):
        by_length[len(ids)].append(i)
    answers: list[list[str]] = [[] for _ in problems]
    sampling = {} if temperature is None else {"temperature": temperature, "top_k": 0, "top_p": 1.0}
    was_training = model.training
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for length in sorted(by_length):
            indices = by_length[length]
            for start in range(0, len(indices), batch_size):
                chunk = indices[start : start + batch_size]
                input_ids = torch.tensor([encoded[i] for i in chunk], dtype=torch.long)
                out = model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    do_sample=temperature is not None,
                    num_return_sequences=samples_per_prompt,
                    max_new_tokens=max_new_tokens,
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                )  # [len(chunk) * samples_per_prompt, length + T], samples of one prompt adjacent
                for row, new_ids in enumerate(out[:, length:]):
                    answers[chunk[row // samples_per_prompt]].append(_decode_until_eos(tokenizer, new_ids))
    model.train(was_training)
    return answers


def evaluate_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[dict[str, str]],
    **generate_kwargs,
) -> float:
    """Mean math-verify score over every generated answer of every row (``generate_answers`` kwargs)."""
    answers = generate_answers(model, tokenizer, [r["problem"] for r in rows], **generate_kwargs)
    scores = [score_answer(a, r["expected_answer"]) for r, group in zip(rows, answers) for a in group]
    return sum(scores) / len(scores)
