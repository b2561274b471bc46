"""HFPolicy: log-prob passes, the micro-batched optimizer steps, schedules and state, on a tiny real Llama."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch.testing import assert_close

from rlvr.errors import CheckpointError, ConfigError
from rlvr.generation import GenerationConfig
from rlvr.generation.hf import HFGenerationBackend
from rlvr.policy.hf import HFPolicy
from tests.unit.schema_config import policy_config

SAMPLING = dict(temperature=0.7, top_k=5, top_p=0.9)
SGD = {"name": "torch.optim.SGD", "kwargs": {"lr": 1.0}}
WARMUP = [
    {"name": "torch.optim.lr_scheduler.LinearLR", "kwargs": {"start_factor": 0.1, "end_factor": 1.0, "total_iters": 3}},
    {"name": "torch.optim.lr_scheduler.ConstantLR", "kwargs": {"factor": 1.0, "total_iters": 10000000000}},
    {"milestones": [3]},
]
PROMPT_LEN = 3


def make_batch(seed: int = 0, vocab: int = 21) -> dict[str, torch.Tensor]:
    """8 right-padded rows of 5..10 tokens; 3 prompt tokens; row 5 masked out; one advantage per row."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([10, 7, 9, 6, 10, 8, 5, 10])
    attention = (torch.arange(10) < lengths[:, None]).long()
    input_ids = torch.randint(4, vocab, (8, 10), generator=g) * attention
    token_mask = attention.float()
    token_mask[:, :PROMPT_LEN] = 0
    sample_mask = torch.ones(8)
    sample_mask[5] = 0
    advantages = torch.randn(8, 1, generator=g).expand(8, 10).clone()
    return {
        "input_ids": input_ids,
        "attention_mask": attention,
        "token_mask": token_mask,
        "sample_mask": sample_mask,
        "advantages": advantages,
    }


def pg_loss(lp, data, global_valid_seqs, global_valid_toks):
    """-Σ A·lp·m / N_tok over t >= 1, plus a token count and the masked min/max of lp as metrics."""
    mask = (data["token_mask"] * data["sample_mask"][:, None])[:, 1:]
    loss = -(data["advantages"][:, 1:] * lp[:, 1:] * mask).sum() / global_valid_toks
    kept = lp[:, 1:].detach()
    return loss, {
        "tokens": mask.sum(),
        "lp_min": torch.where(mask > 0, kept, math.inf).min(),
        "lp_max": torch.where(mask > 0, kept, -math.inf).max(),
    }


def reference_logprobs(model, input_ids, attention_mask, temperature):
    """Independent reference: each row alone, unpadded, log_softmax(logits / T) gathered at the next token."""
    out = torch.zeros(input_ids.shape)
    for i, length in enumerate(attention_mask.sum(-1).tolist()):
        ids = input_ids[i : i + 1, :length]
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0, :-1] / temperature, dim=-1)
        out[i, 1:length] = log_probs.gather(-1, ids[0, 1:, None]).squeeze(-1)
    return out


def test_get_logprobs_equal_per_row_reference_with_left_or_right_padding(model):
    """Unfiltered logprobs equal an unpadded per-row forward; 0 at position 0 and on padding; left padding too."""
    batch = make_batch()
    policy = HFPolicy(model, temperature=0.7)
    with torch.no_grad():
        expected = reference_logprobs(model, batch["input_ids"], batch["attention_mask"], 0.7)
    right = policy.get_logprobs(batch["input_ids"], batch["attention_mask"], micro_batch_size=3, filtered=False)
    assert_close(right, expected, atol=1e-5, rtol=1e-5)
    lengths = batch["attention_mask"].sum(-1)
    shift = (10 - lengths).tolist()
    left_ids = torch.stack([row.roll(s) for row, s in zip(batch["input_ids"], shift)])
    left_mask = torch.stack([row.roll(s) for row, s in zip(batch["attention_mask"], shift)])
    left = policy.get_logprobs(left_ids, left_mask, micro_batch_size=8, filtered=False)
    assert_close(torch.stack([row.roll(-s) for row, s in zip(left, shift)]), expected, atol=1e-5, rtol=1e-5)


def test_policy_logprobs_equal_generation_logprobs(model, tokenizer):
    """For sampled sequences (T=0.7, top-k 5, top-p 0.9), get_logprobs(filtered=True) at the generated tokens
    equals the generator's logprobs (fp32, 1e-5); the reference pass (filtered=False) differs."""
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [4], [14, 15, 16, 17]]
    outs = HFGenerationBackend(model, tokenizer).generate(
        prompts, GenerationConfig(max_new_tokens=10, **SAMPLING), seed=4
    )
    seqs = [p + o.token_ids for p, o in zip(prompts, outs)]
    width = max(map(len, seqs))
    input_ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
    attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    policy = HFPolicy(model, **SAMPLING)
    filtered = policy.get_logprobs(input_ids, attention, micro_batch_size=2, filtered=True)
    unfiltered = policy.get_logprobs(input_ids, attention, micro_batch_size=2, filtered=False)
    for i, (prompt, out) in enumerate(zip(prompts, outs)):
        span = slice(len(prompt), len(prompt) + len(out.token_ids))
        assert_close(filtered[i, span], torch.tensor(out.logprobs), atol=1e-5, rtol=1e-5)
        assert (unfiltered[i, span] <= filtered[i, span] + 1e-6).all()  # renormalised over fewer tokens
    assert not torch.allclose(filtered, unfiltered)


def _train_once(make_model, micro_batch_size, **policy_kw):
    policy = HFPolicy(
        make_model(seed=0),
        optimizer={"name": "torch.optim.SGD", "kwargs": {"lr": 0.1}},
        max_grad_norm=None,
        **policy_kw,
    )
    metrics = policy.train(make_batch(), pg_loss, global_batch_size=4, micro_batch_size=micro_batch_size)
    return policy.model, metrics


@pytest.mark.parametrize("sampling", [{}, SAMPLING], ids=["unfiltered", "filtered"])
def test_update_does_not_depend_on_micro_batch_size(make_model, sampling):
    """Same rollout, 2 global batches of 4: 1, 2 or 4 rows per micro-batch give the same grads, weights, metrics."""
    results = {mbs: _train_once(make_model, mbs, **sampling) for mbs in (1, 2, 4)}
    ref_model, ref_metrics = results[4]
    for mbs in (1, 2):
        model, metrics = results[mbs]
        for (name, p), p_ref in zip(model.named_parameters(), ref_model.parameters()):
            assert_close(p.grad, p_ref.grad, msg=name)
            assert_close(p, p_ref, msg=name)
        assert metrics.keys() == ref_metrics.keys()
        assert_close(torch.tensor(list(metrics.values())), torch.tensor(list(ref_metrics.values())))


@pytest.mark.parametrize("clip", [False, True])
def test_one_global_batch_equals_a_hand_written_step(make_model, clip):
    """gbs = B, micro-batches of 3/3/2: loss, grads and the SGD(lr=1) update equal one full-batch autograd step of
    -Σ A·lp·m / N_tok on the reference logprobs; grad_norm is the pre-clip norm and clipping scales the step."""
    batch = make_batch()
    reference = make_model(seed=0)
    mask = batch["token_mask"] * batch["sample_mask"][:, None]
    lp = reference_logprobs(reference, batch["input_ids"], batch["attention_mask"], 0.7)
    loss = -(batch["advantages"] * lp * mask).sum() / mask[:, 1:].sum()
    loss.backward()
    grads = [p.grad.clone() for p in reference.parameters()]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
    max_norm = norm / 2 if clip else None
    policy = HFPolicy(make_model(seed=0), optimizer=SGD, max_grad_norm=max_norm, temperature=0.7)
    metrics = policy.train(batch, pg_loss, global_batch_size=8, micro_batch_size=3)
    assert metrics["loss"] == pytest.approx(loss.item(), rel=1e-5, abs=1e-6)
    assert metrics["grad_norm"] == pytest.approx(norm, rel=1e-5)
    # response tokens 7+4+6+3+7+2+7 (row 5 is masked); 7 valid rows
    assert (metrics["global_valid_toks"], metrics["global_valid_seqs"], metrics["tokens"]) == (36.0, 7.0, 36.0)
    scale = 0.5 if clip else 1.0
    for p, p0, g in zip(policy.model.parameters(), reference.parameters(), grads):
        assert_close(p, p0 - scale * g, atol=1e-5, rtol=1e-4)


def test_metrics_sum_over_micro_batches_and_average_over_global_batches(make_model, model):
    """With lr=0: loss = mean over 2 global batches of each batch's own normalised loss; token counts averaged;
    *_min/*_max are the extremes over everything; num_optimizer_steps = 2."""
    batch = make_batch()
    policy = HFPolicy(make_model(seed=0), optimizer={"name": "SGD", "kwargs": {"lr": 0.0}}, temperature=0.7)
    lp = policy.get_logprobs(batch["input_ids"], batch["attention_mask"], micro_batch_size=8, filtered=True)
    mask = batch["token_mask"] * batch["sample_mask"][:, None]
    per_gb = [
        (-(batch["advantages"] * lp * mask)[rows].sum() / mask[rows, 1:].sum(), mask[rows].sum())
        for rows in (slice(0, 4), slice(4, 8))
    ]
    metrics = policy.train(batch, pg_loss, global_batch_size=4, micro_batch_size=2)
    assert metrics["loss"] == pytest.approx(sum(x[0].item() for x in per_gb) / 2, rel=1e-5)
    assert metrics["tokens"] == metrics["global_valid_toks"] == (20 + 16) / 2  # response tokens of rows 0-3 and 4,6,7
    assert metrics["lp_min"] == pytest.approx(lp[mask > 0].min().item(), abs=1e-5)
    assert metrics["lp_max"] == pytest.approx(lp[mask > 0].max().item(), abs=1e-5)
    assert metrics["num_optimizer_steps"] == 2


def test_k_optimizer_steps_and_one_scheduler_step_per_train_call(make_model):
    """B=8, gbs=2 -> 4 AdamW steps per call; warm-up LinearLR(0.1->1 over 3) advances once per call:
    reported lr = 1e-3 * [0.1, 0.4, 0.7, 1.0]."""
    policy = HFPolicy(
        make_model(seed=0), optimizer={"name": "torch.optim.AdamW", "kwargs": {"lr": 1e-3}}, scheduler=WARMUP
    )
    lrs = []
    for call in range(1, 5):
        metrics = policy.train(make_batch(seed=call), pg_loss, global_batch_size=2, micro_batch_size=1)
        lrs.append(metrics["lr"])
        assert metrics["num_optimizer_steps"] == 4
        steps = {int(state["step"]) for state in policy.optimizer.state.values()}
        assert steps == {4 * call}
        assert policy.scheduler.last_epoch == call
    assert_close(lrs, [1e-4, 4e-4, 7e-4, 1e-3])


def _in_row_order(parts: list[torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The loss inputs of consecutive micro-batches, put back as ``[B, S]``: the policy feeds rows shortest first
    (a stable sort) and each micro-batch on its own width, padding columns cut off (rlvr.policy.batching)."""
    order = torch.argsort(batch["attention_mask"].sum(-1), stable=True)
    out = torch.zeros(batch["input_ids"].shape)
    start = 0
    for part in parts:
        out[order[start : start + len(part)], : part.shape[1]] = part
        start += len(part)
    return out


def test_tokens_outside_the_filtered_set_are_dropped_from_the_mask(make_model):
    """With top_k=1 every non-argmax token is filtered: the loss sees lp 0 and token_mask 0 there, grads stay finite."""
    batch = make_batch()
    seen = {}

    def capture(lp, data, n_seq, n_tok):
        seen.setdefault("lp", []).append(lp.detach())
        seen.setdefault("mask", []).append(data["token_mask"])
        return pg_loss(lp, data, n_seq, n_tok)

    policy = HFPolicy(make_model(seed=0), optimizer=SGD, top_k=1)
    policy.train(batch, capture, global_batch_size=8, micro_batch_size=4)
    lp, mask = _in_row_order(seen["lp"], batch), _in_row_order(seen["mask"], batch)
    assert (lp == 0).all()  # kept tokens have probability 1, filtered ones are zeroed
    assert mask.sum() < batch["token_mask"].sum() and (mask <= batch["token_mask"]).all()
    assert all(torch.isfinite(p.grad).all() for p in policy.model.parameters())


def test_rollout_not_divisible_by_global_batch_is_an_error(model):
    """B=8 with train_global_batch_size=3 raises ConfigError rollout_batch_not_divisible before any compute."""
    with pytest.raises(ConfigError, match="rollout_batch_not_divisible"):
        HFPolicy(model).train(make_batch(), pg_loss, global_batch_size=3, micro_batch_size=1)


def test_state_dict_round_trip_resumes_identically(make_model):
    """Saving after one step and loading into a fresh policy continues exactly like the original (AdamW moments,
    scheduler position and weights all restored)."""
    kw = dict(optimizer={"name": "torch.optim.AdamW", "kwargs": {"lr": 1e-2}}, scheduler=WARMUP)
    original = HFPolicy(make_model(seed=0), **kw)
    original.train(make_batch(seed=1), pg_loss, global_batch_size=4, micro_batch_size=2)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    resumed = HFPolicy(make_model(seed=9), **kw)
    resumed.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    a = original.train(make_batch(seed=2), pg_loss, global_batch_size=4, micro_batch_size=2)
    b = resumed.train(make_batch(seed=2), pg_loss, global_batch_size=4, micro_batch_size=2)
    assert a == b
    for p, q in zip(original.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(CheckpointError, match="scheduler"):
        HFPolicy(make_model(seed=0)).load_state_dict(original.state_dict())


def test_model_state_refits_a_generation_backend(make_model, tokenizer):
    """After a training step, update_weights(model_state()) makes a separate backend generate like the policy."""
    policy = HFPolicy(make_model(seed=0), optimizer=SGD)
    policy.train(make_batch(), pg_loss, global_batch_size=8, micro_batch_size=8)
    backend = HFGenerationBackend(make_model(seed=0), tokenizer)
    cfg = GenerationConfig(max_new_tokens=8, greedy=True)
    stale = backend.generate([[5, 6, 7]], cfg, seed=0)
    backend.update_weights(policy.model_state())
    fresh = backend.generate([[5, 6, 7]], cfg, seed=0)
    assert fresh == HFGenerationBackend(policy.model, tokenizer).generate([[5, 6, 7]], cfg, seed=0) != stale


def test_from_config_loads_a_saved_hf_model(model, tmp_path):
    """from_config reads model_name via AutoModelForCausalLM, and the sampling keys of policy.generation."""
    model.save_pretrained(tmp_path / "tiny")
    cfg = {
        "model_name": str(tmp_path / "tiny"),
        "precision": "float32",
        "max_grad_norm": 0.5,
        "optimizer": SGD,
        "scheduler": WARMUP,
        "generation": {"temperature": 0.7, "top_k": 5, "top_p": 0.9},
    }
    policy = HFPolicy.from_config(policy_config(**cfg), device="cpu")
    assert (policy.temperature, policy.top_k, policy.top_p, policy.max_grad_norm) == (0.7, 5, 0.9, 0.5)
    for p, q in zip(policy.model.parameters(), model.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(CheckpointError, match="policy.model_name"):
        HFPolicy.from_config(policy_config(**{**cfg, "model_name": str(tmp_path / "missing")}), device="cpu")
    with pytest.raises(ConfigError, match="policy.precision"):
        HFPolicy.from_config(policy_config(**{**cfg, "precision": "float8"}), device="cpu")
