"""The two memory keys: activation checkpointing and chunked log-probs, on both policy backends.

Each must change memory and nothing else: gradients, updates and log-probs equal the plain path's. Memory is
compared through what autograd saves for the backward pass (``saved_tensors_hooks``), which is deterministic,
rather than through a process's peak memory.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager

import pytest
import torch
from torch.testing import assert_close

from rlvr.errors import ConfigError
from rlvr.policy.activations import enable_activation_checkpointing
from rlvr.policy.hf import HFPolicy
from rlvr.policy.logprobs import chunked_token_logprobs, token_logprobs
from rlvr.policy.megatron import MegatronPolicy
from tests.unit.schema_config import policy_config

SAMPLING = dict(temperature=0.7, top_k=6, top_p=0.9)
SGD = {"name": "torch.optim.SGD", "kwargs": {"lr": 1.0}}


def tied_qwen2(vocab: int = 64, layers: int = 3) -> torch.nn.Module:
    """A Qwen2 with tied embeddings and QKV biases; every tensor redrawn so that a wrong path shows."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=1,
    )
    torch.manual_seed(3)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.2)
    return model.eval()


def make_batch(vocab: int = 64, rows: int = 4, width: int = 12) -> dict[str, torch.Tensor]:
    """Right-padded rows of 7..12 tokens, loss on tokens 4.. ; one advantage per row."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([12, 9, 7, 11])[:rows]
    attention = (torch.arange(width) < lengths[:, None]).long()
    token_mask = attention.float() * (torch.arange(width) >= 4)
    return {
        "input_ids": torch.randint(2, vocab, (rows, width), generator=g) * attention,
        "attention_mask": attention,
        "token_mask": token_mask,
        "sample_mask": torch.ones(rows),
        "advantages": torch.randn(rows, 1, generator=g).expand(rows, width).clone(),
    }


def pg_loss(lp, data, global_valid_seqs, global_valid_toks):
    mask = (data["token_mask"] * data["sample_mask"][:, None])[:, 1:]
    return -(data["advantages"][:, 1:] * lp[:, 1:] * mask).sum() / global_valid_toks, {}


@contextmanager
def saved_tensors(record: list[torch.Tensor]):
    """Record every tensor autograd saves for backward (outside checkpointed regions) while active."""

    def pack(tensor):
        record.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield


def saved_bytes(tensors: list[torch.Tensor]) -> int:
    """Bytes of the distinct storages among ``tensors`` (a weight saved by several ops counts once)."""
    storages = {}
    for t in tensors:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def training_pass(policy: HFPolicy, batch: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], dict]:
    """One train call under the recording hook: ``(saved tensors, metrics)``."""
    record: list[torch.Tensor] = []
    with saved_tensors(record):
        metrics = policy.train(
            batch, pg_loss, global_batch_size=len(batch["input_ids"]), micro_batch_size=len(batch["input_ids"])
        )
    return record, metrics


def assert_same_update(a: HFPolicy, b: HFPolicy, metrics_a: dict, metrics_b: dict) -> None:
    assert metrics_a["grad_norm"] == pytest.approx(metrics_b["grad_norm"], rel=1e-5)
    assert metrics_a["loss"] == pytest.approx(metrics_b["loss"], rel=1e-5)
    for (name, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert_close(p, q, atol=1e-6, rtol=1e-5, msg=name)


def test_activation_checkpointing_gives_equal_gradients_and_saves_less():
    batch = make_batch()
    plain = HFPolicy(tied_qwen2(), optimizer=SGD, **SAMPLING)
    checkpointed = HFPolicy(tied_qwen2(), optimizer=SGD, activation_checkpointing=True, **SAMPLING)
    saved_plain, metrics_plain = training_pass(plain, batch)
    saved_ckpt, metrics_ckpt = training_pass(checkpointed, batch)
    assert_same_update(plain, checkpointed, metrics_plain, metrics_ckpt)
    # Per layer, the plain pass keeps every attention/MLP intermediate; the checkpointed one only the layer input.
    assert saved_bytes(saved_ckpt) < 0.6 * saved_bytes(saved_plain), (saved_bytes(saved_ckpt), saved_bytes(saved_plain))
    # Scoring without gradients is untouched, and the frozen reference (a deep copy) still scores.
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert_close(
        checkpointed.get_logprobs(ids, mask, micro_batch_size=2),
        plain.get_logprobs(ids, mask, micro_batch_size=4),
        atol=1e-6,
        rtol=0,
    )
    reference = HFPolicy(copy.deepcopy(checkpointed.model).requires_grad_(False), **SAMPLING)
    assert_close(
        reference.get_logprobs(ids, mask, micro_batch_size=4),
        plain.get_logprobs(ids, mask, micro_batch_size=4),
        atol=1e-6,
        rtol=0,
    )


def test_activation_checkpointing_of_a_model_without_decoder_layers_is_a_config_error():
    with pytest.raises(ConfigError, match="activation_checkpointing: cannot find the decoder layers"):
        enable_activation_checkpointing(torch.nn.Linear(4, 4))


@pytest.mark.parametrize("chunk", [1, 4, 11, 64])
def test_chunked_logprobs_equal_the_full_path_with_gradients(chunk):
    """Values and gradients (to the hidden states and to the output layer) equal token_logprobs' for any chunk."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 12, 16, generator=g, requires_grad=True)
    head = torch.nn.Linear(16, 50, bias=False)
    ids = torch.randint(0, 50, (3, 12), generator=g)
    weights = torch.randn(3, 12, generator=g)
    full = token_logprobs(head(hidden), ids, **SAMPLING)
    keep = torch.isfinite(full)  # top-k/top-p remove some targets: -inf in both paths
    (full[keep] * weights[keep]).sum().backward()
    grads = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad = head.weight.grad = None
    chunked = chunked_token_logprobs(hidden, head, ids, chunk_size=chunk, **SAMPLING)
    (chunked[keep] * weights[keep]).sum().backward()
    assert torch.equal(torch.isfinite(chunked), keep)
    assert_close(chunked[keep], full[keep], atol=1e-6, rtol=1e-6)
    assert_close(hidden.grad, grads[0], atol=1e-6, rtol=1e-5)
    assert_close(head.weight.grad, grads[1], atol=1e-6, rtol=1e-5)


def test_chunked_policy_equals_unchunked_and_never_saves_full_logits():
    """Same log-probs and the same update; no saved tensor holds more than one chunk of vocabulary rows."""
    vocab, chunk = 256, 3
    batch = make_batch(vocab=vocab)
    plain = HFPolicy(tied_qwen2(vocab), optimizer=SGD, **SAMPLING)
    chunked = HFPolicy(tied_qwen2(vocab), optimizer=SGD, logprob_chunk_size=chunk, **SAMPLING)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert_close(
        chunked.get_logprobs(ids, mask, micro_batch_size=4),
        plain.get_logprobs(ids, mask, micro_batch_size=4),
        atol=1e-5,
        rtol=0,
    )
    saved_plain, metrics_plain = training_pass(plain, batch)
    saved_chunked, metrics_chunked = training_pass(chunked, batch)
    assert_same_update(plain, chunked, metrics_plain, metrics_chunked)
    rows, width = ids.shape

    def largest_vocab_tensor(saved):
        return max((t.numel() for t in saved if t.dim() >= 2 and t.shape[-1] == vocab and t.dim() > 2), default=0)

    assert largest_vocab_tensor(saved_plain) >= rows * (width - 1) * vocab  # the full [B, S-1, V] logits
    assert largest_vocab_tensor(saved_chunked) == 0  # chunks are recomputed in backward, never kept


def test_bad_logprob_chunk_size_and_softcapped_logits_are_config_errors():
    with pytest.raises(ConfigError, match=r"policy\.logprob_chunk_size: must be null or an integer >= 1"):
        HFPolicy(tied_qwen2(), logprob_chunk_size=0)
    model = tied_qwen2()
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(ConfigError, match="final_logit_softcapping.*set policy.logprob_chunk_size: null"):
        HFPolicy(model, logprob_chunk_size=8)


@pytest.fixture(scope="module")
def megatron_ckpt(tmp_path_factory):
    from rlvr.convert.hf_megatron import save_hf_model_as_megatron

    model = tied_qwen2()
    root = tmp_path_factory.mktemp("mcore") / "policy"
    save_hf_model_as_megatron(model, None, root, 0)
    return root


def megatron(root, precision: str = "float32", **mcfg_and_keys) -> MegatronPolicy:
    keys = {k: mcfg_and_keys.pop(k) for k in list(mcfg_and_keys) if k == "logprob_chunk_size"}
    cfg = {
        "optimizer": SGD,
        "scheduler": None,
        "max_grad_norm": 1.0,
        "precision": precision,
        "generation": SAMPLING,
        "megatron_cfg": {"enabled": True, **mcfg_and_keys},
        **keys,
    }
    return MegatronPolicy.from_config(policy_config(**cfg), policy_path=root, device="cpu")


def test_megatron_activation_checkpointing_and_chunking_change_memory_only(megatron_ckpt):
    batch = make_batch()
    plain = megatron(megatron_ckpt)
    saved_plain, metrics_plain = training_pass(plain, batch)
    for variant in (
        megatron(megatron_ckpt, activation_checkpointing=True),
        megatron(megatron_ckpt, logprob_chunk_size=4),
    ):
        ids, mask = batch["input_ids"], batch["attention_mask"]
        assert_close(
            variant.get_logprobs(ids, mask, micro_batch_size=4),
            megatron(megatron_ckpt).get_logprobs(ids, mask, micro_batch_size=4),
            atol=1e-5,
            rtol=0,
        )
        saved, metrics = training_pass(variant, batch)
        assert_same_update(plain, variant, metrics_plain, metrics)
        assert saved_bytes(saved) < saved_bytes(saved_plain)


def test_megatron_bf16_trains_fp32_masters(megatron_ckpt):
    """The megatron-core backend had the same defect; now its optimizer (megatron_cfg.optimizer too) steps fp32."""
    policy = megatron(megatron_ckpt, "bfloat16", optimizer={"lr": 1e-6, "weight_decay": 0.01})
    before = {n: p.detach().clone() for n, p in policy.master.named_parameters()}
    policy.train(make_batch(), pg_loss, global_batch_size=4, micro_batch_size=2)
    # Matrices and embeddings compute in bf16 (megatron-core's torch-norm fallback keeps RMSNorm weights in fp32:
    # those are their own masters).
    assert all(p.dtype == torch.bfloat16 for p in policy.model.parameters() if p.dim() == 2)
    stepped = [p for group in policy.optimizer.param_groups for p in group["params"]]
    assert {p.dtype for p in stepped} == {torch.float32}
    assert all(t.dtype == torch.float32 for p in stepped for t in policy.optimizer.state[p].values() if t.dim())
    changed = torch.cat([(p.detach() != before[n]).flatten() for n, p in policy.master.named_parameters()])
    assert changed.float().mean() > 0.9  # an lr-1e-6 step moves (almost) every master element
    state = policy.state_dict()
    assert state["master_weights"] and {t.dtype for t in state["master_weights"].values()} == {torch.float32}
    assert all(t.dtype == torch.bfloat16 for t in policy.hf_state_dict().values() if t.dim() == 2)
