"""Batched sampling with a KV cache through a transformers causal LM (the CPU / small-model backend).

The sampling loop is ours, not ``model.generate``: each step scores the last position, applies
:func:`rlvr.policy.logprobs.process_logits` (temperature -> top-k -> top-p, the function the trainer uses) and
draws from that distribution, so a sample's ``logprobs`` are exactly the processed log-probs that the policy's
``get_logprobs(filtered=True)`` recomputes for the same sequence (up to KV-cache rounding).

Prompts are left-padded: row ``i`` occupies the last ``len_i`` columns, the attention mask hides the padding and
position ids count real tokens only (``cumsum(mask) - 1``), so a prompt is scored as if it were alone.

Work per step (README "Benchmarks"): the prefill runs once per distinct prompt (GRPO repeats each prompt
``num_generations_per_prompt`` times) and its KV cache is gathered per row; a row that stops leaves the batch
and the cache, so decoding costs the sum of the sample lengths, not rows x the longest; the loop ends when every
row has stopped. The draw still runs over all rows (finished ones uniform), so the generator advances as if no
row had left and a seed gives the same samples as a loop that keeps every row.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from rlvr.generation.base import GenerationConfig, GenerationOutput, token_budget
from rlvr.policy.logprobs import process_logits


class Detokenizer(Protocol):
    """The part of a HF tokenizer this backend needs."""

    eos_token_id: int | None
    pad_token_id: int | None

    def decode(self, token_ids: list[int], skip_special_tokens: bool = ...) -> str: ...


def sample_next(
    processed: torch.Tensor, generator: torch.Generator | None, *, greedy: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one token per row from processed logits ``[B, V]``; returns ``(tokens[B], logprobs[B])``.

    ``logprobs`` are ``log softmax(processed)`` at the chosen tokens (also in greedy mode, where the chosen
    token is the arg-max).
    """
    log_probs = processed.log_softmax(dim=-1)
    if greedy:
        tokens = processed.argmax(dim=-1)
    else:
        tokens = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(-1)
    return tokens, log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def _sample_live(
    processed: torch.Tensor, live: torch.Tensor, batch: int, generator: torch.Generator | None, *, greedy: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sample_next` for the live rows ``processed[L, V]`` (batch indices ``live[L]``) of a batch of ``batch``.

    The draw runs on a full ``[batch, V]`` tensor whose finished rows are uniform, so the generator advances
    exactly as when every row is still decoding: a sample does not depend on when the other rows stopped.
    """
    if greedy or len(live) == batch:
        return sample_next(processed, generator, greedy=greedy)
    full = processed.new_zeros((batch, processed.shape[-1]))
    full[live] = processed
    tokens, logprobs = sample_next(full, generator)
    return tokens[live], logprobs[live]


def find_stop_string(text: str, stop_strings: Sequence[str]) -> int | None:
    """End index (exclusive) of the earliest stop string in ``text``, or None; ties go to the longer match."""
    best: tuple[int, int] | None = None
    for stop in stop_strings:
        start = text.find(stop)
        if start >= 0 and (best is None or (start, -len(stop)) < (best[0], -best[1])):
            best = (start, len(stop))
    return None if best is None else best[0] + best[1]


class _Row:
    """Bookkeeping of one sample while it is being generated."""

    def __init__(self, budget: int):
        self.budget = budget  # tokens it may still produce (max_new_tokens, capped by the model length)
        self.token_ids: list[int] = []
        self.logprobs: list[float] = []
        self.text_end: int | None = None  # set when a stop string matched
        self.done = budget <= 0
        self.truncated = budget <= 0


class HFGenerationBackend:
    """:class:`~rlvr.generation.base.GenerationBackend` over a ``PreTrainedModel`` (CPU or one GPU).

    ``batch_size`` (``policy.generation_batch_size``) bounds the rows per forward; ``max_total_length``
    (``policy.max_total_sequence_length``) caps prompt + generation like vLLM's ``max_model_len``: a sample
    that reaches it is ``truncated`` (a prompt already at the cap yields an empty, truncated sample).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Detokenizer,
        *,
        batch_size: int | None = None,
        max_total_length: int | None = None,
    ):
        self.model = model.eval()  # dropout would make the reported logprobs differ from a re-score
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_total_length = max_total_length
        self.eos_token_id = tokenizer.eos_token_id
        if self.eos_token_id is None:
            self.eos_token_id = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else (self.eos_token_id if isinstance(self.eos_token_id, int) else 0)
        # transformers 5.x renamed ``past_key_values`` to ``cache`` in later minor releases; accept both.
        params = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"
        self._keep_kwarg = "logits_to_keep" if "logits_to_keep" in params else None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def update_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Copy the trainer's weights in place (strict: every parameter name must match)."""
        with torch.no_grad():
            self.model.load_state_dict(dict(state_dict), strict=True)

    def prepare_for_generation(self) -> None:
        """Nothing to take back: the model stays where it is and each call allocates its own KV cache."""

    def finish_generation(self) -> None:
        """The last call's KV cache is already freed; on a GPU its cached blocks go back to the driver, so that a
        training process colocated on the device can use them (within one process the allocator reuses them)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.no_grad()
    def generate(
        self, prompt_token_ids: list[list[int]], cfg: GenerationConfig, *, seed: int | None = None
    ) -> list[GenerationOutput]:
        """Sample one continuation per prompt; same prompts, config, batch size and seed -> same outputs."""
        for i, prompt in enumerate(prompt_token_ids):
            if len(prompt) == 0:
                raise ValueError(f"prompt {i} is empty: generation needs at least one prompt token")
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(int(seed))
        size = self.batch_size or max(len(prompt_token_ids), 1)
        outputs: list[GenerationOutput] = []
        for start in range(0, len(prompt_token_ids), size):
            outputs.extend(self._generate_batch(prompt_token_ids[start : start + size], cfg, generator))
        return outputs

    def _generate_batch(
        self, prompts: list[list[int]], cfg: GenerationConfig, generator: torch.Generator
    ) -> list[GenerationOutput]:
        """Left-pad, prefill each distinct prompt once, then decode one token per step for the live rows only.

        ``live`` holds the batch indices of the rows still decoding; a row that stops leaves the batch (and the
        KV cache) at once, so a step costs what the unfinished rows need, and the loop ends when none is left.
        """
        device = self.device
        input_ids, attention = self._left_pad(prompts)
        rows = [_Row(token_budget(len(p), cfg, self.max_total_length)) for p in prompts]
        stop_ids = cfg.resolved_stop_token_ids(self.eos_token_id)
        live = torch.tensor([i for i, row in enumerate(rows) if not row.done], dtype=torch.long, device=device)
        if len(live) == 0:
            return [self._finish(row) for row in rows]
        attention = attention[live]
        logits, cache = self._prefill(input_ids[live], attention, [prompts[i] for i in live.tolist()])
        next_position = attention.sum(-1, keepdim=True)
        while True:
            processed = process_logits(logits, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
            tokens, logprobs = _sample_live(processed, live, len(rows), generator, greedy=cfg.greedy)
            for i, token, logprob in zip(live.tolist(), tokens.tolist(), logprobs.tolist()):
                self._advance(rows[i], token, logprob, cfg, stop_ids)
            keep = torch.tensor([not rows[i].done for i in live.tolist()], device=device)
            if not keep.any():
                break
            if not keep.all():
                index = keep.nonzero().squeeze(-1)
                cache.batch_select_indices(index)
                live, tokens, attention, next_position = (t[index] for t in (live, tokens, attention, next_position))
            attention = torch.nn.functional.pad(attention, (0, 1), value=1)
            logits, cache = self._forward(tokens.unsqueeze(-1), attention, next_position, cache)
            next_position = next_position + 1
        return [self._finish(row) for row in rows]

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` ``[B, W]``: row ``i`` in its last ``len_i`` columns."""
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long, device=self.device)
        attention = torch.zeros((len(prompts), width), dtype=torch.long, device=self.device)
        for i, prompt in enumerate(prompts):
            input_ids[i, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long, device=self.device)
            attention[i, width - len(prompt) :] = 1
        return input_ids, attention

    def _prefill(
        self, input_ids: torch.Tensor, attention: torch.Tensor, prompts: list[list[int]]
    ) -> tuple[torch.Tensor, Any]:
        """Last-position logits ``[B, V]`` and the KV cache of the prompts, computing each distinct prompt once.

        GRPO repeats every prompt ``num_generations_per_prompt`` times; identical rows have identical keys,
        values and logits, so the forward runs on the distinct rows and the cache is then gathered per row.
        """
        first: dict[tuple[int, ...], int] = {}
        source = [first.setdefault(tuple(p), i) for i, p in enumerate(prompts)]
        distinct = sorted(set(source))
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        if len(distinct) == len(prompts):
            return self._forward(input_ids, attention, positions, None)
        pick = torch.tensor(distinct, dtype=torch.long, device=input_ids.device)
        logits, cache = self._forward(input_ids[pick], attention[pick], positions[pick], None)
        slot = {row: k for k, row in enumerate(distinct)}
        gather = torch.tensor([slot[row] for row in source], dtype=torch.long, device=input_ids.device)
        cache.batch_select_indices(gather)
        return logits[gather], cache

    def _advance(self, row: _Row, token: int, logprob: float, cfg: GenerationConfig, stop_ids: frozenset[int]) -> None:
        """Append one sampled token and decide whether the row stops (stop id, stop string, or length)."""
        row.token_ids.append(token)
        row.logprobs.append(logprob)
        if token in stop_ids:
            row.done = True
            return
        if cfg.stop_strings:
            end = find_stop_string(self.tokenizer.decode(row.token_ids, skip_special_tokens=True), cfg.stop_strings)
            if end is not None:
                row.text_end, row.done = end, True
                return
        if len(row.token_ids) >= row.budget:
            row.done = row.truncated = True

    def _finish(self, row: _Row) -> GenerationOutput:
        text = self.tokenizer.decode(row.token_ids, skip_special_tokens=True)
        if row.text_end is not None:
            text = text[: row.text_end]
        return GenerationOutput(token_ids=row.token_ids, logprobs=row.logprobs, text=text, truncated=row.truncated)

    def _forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, cache: Any
    ) -> tuple[torch.Tensor, Any]:
        """One cached forward; returns the last position's logits ``[B, V]`` and the updated cache."""
        kwargs: dict[str, Any] = {self._cache_kwarg: cache, "use_cache": True}
        if self._keep_kwarg:
            kwargs[self._keep_kwarg] = 1
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs)
        new_cache = getattr(out, "cache", None)
        if new_cache is None:
            new_cache = out.past_key_values
        return out.logits[:, -1], new_cache
