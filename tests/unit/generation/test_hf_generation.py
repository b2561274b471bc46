"""The HF generation backend against transformers' own generate and full-sequence forwards."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from rlvr.generation import GenerationConfig
from rlvr.generation.hf import HFGenerationBackend, sample_next
from rlvr.policy.logprobs import process_logits, token_logprobs

PAD, EOS = 0, 1  # the conftest tokenizer's ids (checked in test_special_ids)
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [4], [14, 15, 16, 17]]
SAMPLING = dict(temperature=0.7, top_k=5, top_p=0.9)


@pytest.fixture(scope="module")
def backend(model, tokenizer) -> HFGenerationBackend:
    return HFGenerationBackend(model, tokenizer)


def test_special_ids(tokenizer, backend):
    """The constants used below are the tokenizer's pad/eos ids, which the backend picked up."""
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (PAD, EOS)
    assert (backend.pad_token_id, backend.eos_token_id) == (PAD, EOS)


def _greedy(backend, prompts, n=10, **kw):
    return backend.generate(prompts, GenerationConfig(max_new_tokens=n, greedy=True, **kw), seed=0)


def _full_logprobs(model, prompt, generated, **kw) -> torch.Tensor:
    """Reference: one unpadded forward over prompt+generation, processed log-probs of the generated tokens."""
    ids = torch.tensor([prompt + generated])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return token_logprobs(logits, ids, **kw)[0, len(prompt) :]


def test_greedy_matches_transformers_generate_on_a_left_padded_batch(model, backend):
    """Greedy tokens equal model.generate(do_sample=False) row by row (HF's output cut after its first EOS)."""
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in PROMPTS])
    mask = (torch.arange(width) >= torch.tensor([width - len(p) for p in PROMPTS])[:, None]).long()
    reference = model.generate(
        input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=10, pad_token_id=PAD, eos_token_id=EOS
    )[:, width:].tolist()
    for out, ref in zip(_greedy(backend, PROMPTS), reference):
        expected = ref[: ref.index(EOS) + 1] if EOS in ref else ref
        assert out.token_ids == expected


@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_logprobs_equal_a_full_forward_under_the_processed_distribution(model, backend, mode):
    """Every sampled token's logprob equals the processed (T=0.7, top-k 5, top-p 0.9) log-prob of an unpadded
    full-sequence forward; all are finite, i.e. every sampled token lies inside the filtered set."""
    cfg = GenerationConfig(max_new_tokens=12, greedy=mode == "greedy", **SAMPLING)
    outputs = backend.generate(PROMPTS, cfg, seed=3)
    for prompt, out in zip(PROMPTS, outputs):
        reference = _full_logprobs(model, prompt, out.token_ids, **SAMPLING)
        assert torch.isfinite(reference).all()
        assert_close(torch.tensor(out.logprobs), reference, atol=1e-5, rtol=1e-5)


def test_batched_greedy_equals_one_prompt_at_a_time(backend):
    """Left padding changes nothing: each row of a batch equals its own single-prompt run (tokens and logprobs)."""
    batched = _greedy(backend, PROMPTS, temperature=0.7)
    for prompt, out in zip(PROMPTS, batched):
        alone = _greedy(backend, [prompt], temperature=0.7)[0]
        assert out.token_ids == alone.token_ids
        assert_close(torch.tensor(out.logprobs), torch.tensor(alone.logprobs), atol=1e-5, rtol=1e-5)


def test_chunked_batches_give_the_same_greedy_result(model, tokenizer, backend):
    """generation_batch_size splits the prompts into forwards without changing any output."""
    chunked = HFGenerationBackend(model, tokenizer, batch_size=3)
    assert [o.token_ids for o in _greedy(chunked, PROMPTS)] == [o.token_ids for o in _greedy(backend, PROMPTS)]


def test_seed_makes_sampling_reproducible(backend):
    """Same seed -> identical samples; another seed -> different samples."""
    cfg = GenerationConfig(max_new_tokens=12, temperature=1.0)
    first, again = backend.generate(PROMPTS, cfg, seed=11), backend.generate(PROMPTS, cfg, seed=11)
    other = backend.generate(PROMPTS, cfg, seed=12)
    assert first == again
    assert [o.token_ids for o in first] != [o.token_ids for o in other]


def test_top_k_one_sampling_is_greedy_with_zero_logprobs(backend):
    """With top_k=1 the processed distribution is a point mass: sampling reproduces greedy, logprobs are 0."""
    sampled = backend.generate(PROMPTS, GenerationConfig(max_new_tokens=8, top_k=1), seed=5)
    greedy = _greedy(backend, PROMPTS, n=8)
    assert [o.token_ids for o in sampled] == [o.token_ids for o in greedy]
    assert all(lp == 0.0 for o in sampled for lp in o.logprobs)


def test_sampler_frequencies_follow_the_processed_distribution():
    """20,000 draws from one processed row: frequencies within 0.015 of its probabilities, none outside top-k."""
    logits = torch.tensor([2.0, 1.5, 1.0, 0.0, -1.0]).repeat(20000, 1)
    processed = process_logits(logits, temperature=0.8, top_k=3)
    generator = torch.Generator().manual_seed(0)
    tokens, logprobs = sample_next(processed, generator)
    frequencies = torch.bincount(tokens, minlength=5).float() / len(tokens)
    assert_close(frequencies, processed[0].softmax(-1), atol=0.015, rtol=0)
    assert frequencies[3:].sum() == 0
    assert_close(logprobs, processed.log_softmax(-1).gather(-1, tokens[:, None]).squeeze(-1))


def test_stop_token_id_ends_the_sample_and_is_kept(backend):
    """stop_token_ids=[g_j] cuts the greedy run after the first g_j (kept in token_ids); not truncated."""
    full = _greedy(backend, [PROMPTS[0]], n=10)[0]
    stop = full.token_ids[3]
    stopped = _greedy(backend, [PROMPTS[0]], n=10, stop_token_ids=[stop])[0]
    assert stopped.token_ids == full.token_ids[: full.token_ids.index(stop) + 1]
    assert stopped.logprobs == full.logprobs[: len(stopped.token_ids)]
    assert not stopped.truncated


def test_stop_string_cuts_text_after_the_match_and_keeps_it(backend, tokenizer):
    """A two-character stop string ends generation at the token that completes it; the text ends with it."""
    full = _greedy(backend, [PROMPTS[1]], n=10)[0]
    text = tokenizer.decode(full.token_ids, skip_special_tokens=True)
    stop = text[2:4]
    stopped = _greedy(backend, [PROMPTS[1]], n=10, stop_strings=[stop])[0]
    end = text.index(stop) + len(stop)
    assert stopped.text == text[:end] and stopped.text.endswith(stop)
    assert tokenizer.decode(stopped.token_ids, skip_special_tokens=True) == text[:end]  # one char per token
    assert not stopped.truncated


def test_length_limits_set_truncated(model, tokenizer, backend):
    """max_new_tokens and max_total_length both end a sample as truncated; a prompt at the cap yields nothing."""
    outs = _greedy(backend, PROMPTS, n=3, stop_token_ids=[])
    for out in outs:
        assert out.truncated == (EOS not in out.token_ids) and len(out.token_ids) <= 3
    capped = HFGenerationBackend(model, tokenizer, max_total_length=6)
    outs = _greedy(capped, PROMPTS, n=10)
    assert [len(o.token_ids) for o in outs if o.truncated] == [6 - len(p) for p, o in zip(PROMPTS, outs) if o.truncated]
    assert outs[1].token_ids == [] and outs[1].truncated and outs[1].text == ""


def test_finished_rows_stop_growing_while_others_continue(backend):
    """Row 0 stops at its own stop token; row 1 in the same batch still produces its full single-row output."""
    first = _greedy(backend, [PROMPTS[0]], n=10)[0]
    stop = first.token_ids[0]
    other_alone = _greedy(backend, [PROMPTS[3]], n=10, stop_token_ids=[stop])[0]
    both = _greedy(backend, [PROMPTS[0], PROMPTS[3]], n=10, stop_token_ids=[stop])
    assert both[0].token_ids == [stop]
    assert both[1].token_ids == other_alone.token_ids


def test_update_weights_refits_the_model(tokenizer, make_model):
    """After update_weights(other.state_dict()) the backend generates exactly what the other model would."""
    target = make_model(seed=7)
    refit = HFGenerationBackend(make_model(seed=0), tokenizer)
    before = _greedy(refit, PROMPTS)
    refit.update_weights(target.state_dict())
    expected = _greedy(HFGenerationBackend(target, tokenizer), PROMPTS)
    assert _greedy(refit, PROMPTS) == expected != before


def test_empty_prompt_is_rejected(backend):
    """An empty prompt cannot be continued: ValueError naming its index."""
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        backend.generate([[5], []], GenerationConfig(max_new_tokens=2), seed=0)


def test_eos_ends_a_sample_without_any_stop_config(backend, tokenizer):
    """EOS always stops (null stop_token_ids): it is the last token, kept in token_ids, absent from the text."""
    prompts = [[4 + i % 17] for i in range(24)]
    outs = backend.generate(prompts, GenerationConfig(max_new_tokens=12, temperature=1.5), seed=1)
    ended = [o for o in outs if EOS in o.token_ids]
    assert ended, "the seed was chosen so that some samples end with EOS"
    for out in ended:
        assert out.token_ids.index(EOS) == len(out.token_ids) - 1 and not out.truncated
        assert out.text == tokenizer.decode(out.token_ids[:-1], skip_special_tokens=True)
        assert "<eos>" not in out.text


def _naive_sample(model, prompts, cfg, seed, stop_ids) -> list[list[int]]:
    """Reference without a KV cache or batch shrinking: every step re-runs the whole left-padded batch, every row
    included (finished ones too), and draws for all rows from one generator, as a plain sampling loop would."""
    generator = torch.Generator().manual_seed(seed)
    out: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    for _ in range(cfg.max_new_tokens):
        seqs = [p + o for p, o in zip(prompts, out)]
        width = max(map(len, seqs))
        ids = torch.tensor([[PAD] * (width - len(s)) + s for s in seqs])
        mask = (ids != PAD).long() * (torch.arange(width) >= torch.tensor([width - len(s) for s in seqs])[:, None])
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
        processed = process_logits(logits[:, -1], temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
        tokens, _ = sample_next(processed, generator)
        for i, token in enumerate(tokens.tolist()):
            if not done[i]:
                out[i].append(token)
                done[i] = token in stop_ids
        if all(done):
            break
    return out


def test_shrinking_batch_and_shared_prefill_sample_what_a_full_batch_loop_samples(model, backend):
    """Rows leave the batch when they stop and repeated prompts share one prefill, yet a seed gives the samples
    of a loop that keeps every row in every step (tokens equal; log-probs equal a full forward, checked above)."""
    prompts = [p for p in PROMPTS for _ in range(3)]  # GRPO's repeated prompts, of several lengths
    cfg = GenerationConfig(max_new_tokens=10, **SAMPLING)
    stop_ids = {EOS, 9, 17}  # frequent stops, so rows leave at different steps
    outputs = backend.generate(prompts, GenerationConfig(**{**cfg.__dict__, "stop_token_ids": (9, 17)}), seed=5)
    expected = _naive_sample(model, prompts, cfg, 5, stop_ids)
    assert [o.token_ids for o in outputs] == expected
    assert len({len(o.token_ids) for o in outputs}) > 2, "the stops were chosen so that rows end at different steps"
