"""Gemma 2 / Gemma 3 conversion and every family's bf16 round trip, refusals and control experiments.

Logit parity runs the transformers class and the megatron-core GPTModel on the same random weights (fp32, CPU);
each control rebuilds the GPTModel with one Gemma feature switched off and checks the logits then move by
> 1e-3, so the 1e-5 parity is evidence that the feature is computed, not that it is too small to matter.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

pytest.importorskip("megatron.core")

from convert_fixtures import VOCAB, make_hf_model  # noqa: E402

from rlvr.convert import hf_to_megatron, load_checkpoint_megatron, megatron_to_hf  # noqa: E402
from rlvr.convert.families import FAMILIES, known_names  # noqa: E402
from rlvr.convert.hf_megatron import hf_config_dict  # noqa: E402
from rlvr.convert.mcore_model import build_gpt_model, gpt_logits, load_state_into_gpt  # noqa: E402
from rlvr.convert.state_mapping import hf_to_mcore_state, mcore_to_hf_state  # noqa: E402
from rlvr.errors import CheckpointError  # noqa: E402

# head_dim 16 (Gemma's default is 256), a window well inside the 120-token inputs, one sliding and one full layer,
# caps small enough that tanh bends the random scores and logits, a pre-attention scalar other than head_dim.
GEMMA = {"head_dim": 16, "sliding_window": 16, "query_pre_attn_scalar": 24}
GEMMA2 = {**GEMMA, "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0}
GEMMA3_ROPE = {
    "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
    "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
}
GEMMA3 = {**GEMMA, "sliding_window_pattern": 2, "final_logit_softcapping": 3.0, "rope_parameters": GEMMA3_ROPE}


def _tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 120), generator=torch.Generator().manual_seed(7))


def _gap(hf_model, config: dict) -> float:
    """Largest |logit difference| between ``hf_model`` and a GPTModel built from ``config`` with its weights."""
    gpt = build_gpt_model(config, device="cpu").eval()
    load_state_into_gpt(gpt, hf_to_mcore_state(hf_model.state_dict(), hf_config_dict(hf_model.config)))
    tokens = _tokens()
    with torch.no_grad():
        return (gpt_logits(gpt, tokens) - hf_model(tokens).logits).abs().max().item()


@pytest.mark.parametrize(
    ("family", "tied", "kv_heads", "overrides"),
    [
        ("gemma2", True, 2, GEMMA2),
        ("gemma2", False, 1, {**GEMMA, "attn_logit_softcapping": None, "final_logit_softcapping": None}),
        ("gemma3", True, 2, {**GEMMA, "sliding_window_pattern": 2}),
        ("gemma3", False, 1, GEMMA3),
    ],
    ids=["gemma2-tied-softcaps", "gemma2-untied-nocaps", "gemma3-tied-defaults", "gemma3-untied-linear-rope"],
)
def test_gemma_logits_match_transformers(tmp_path: Path, family, tied, kv_heads, overrides) -> None:
    """Through a converted checkpoint on disk, the GPTModel gives the transformers logits (fp32, CPU)."""
    hf_model = make_hf_model(family, tied=tied, kv_heads=kv_heads, **overrides)
    assert hf_model.config.layer_types == ["sliding_attention", "full_attention"]
    folder = tmp_path / "hf"
    hf_model.save_pretrained(folder)
    state, run_config, _ = load_checkpoint_megatron(hf_to_megatron(str(folder), str(tmp_path / "megatron")))
    assert (run_config["model"]["family"], run_config["model"]["qk_layernorm"]) == (family, family == "gemma3")
    gpt = build_gpt_model(run_config["model"]["hf_config"], device="cpu").eval()
    load_state_into_gpt(gpt, state)
    tokens = _tokens()
    with torch.no_grad():
        expected = hf_model(tokens).logits
        got = gpt_logits(gpt, tokens)
    assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("family", "overrides", "switched_off"),
    [
        ("gemma2", GEMMA2, {"attn_logit_softcapping": None}),
        ("gemma2", GEMMA2, {"final_logit_softcapping": None}),
        ("gemma2", GEMMA2, {"query_pre_attn_scalar": 16}),
        ("gemma2", GEMMA2, {"layer_types": ["full_attention", "full_attention"]}),
        ("gemma3", GEMMA3, {"rope_parameters": {**GEMMA3_ROPE, "sliding_attention": {"rope_theta": 1_000_000.0}}}),
        ("gemma3", GEMMA3, {"rope_parameters": {**GEMMA3_ROPE, "full_attention": {"rope_theta": 1_000_000.0}}}),
    ],
    ids=["attn-softcap", "final-softcap", "pre-attn-scalar", "sliding-window", "local-rope", "linear-rope"],
)
def test_each_gemma_feature_moves_the_logits(family: str, overrides: dict, switched_off: dict) -> None:
    """Control: the same weights built without one feature are > 1e-3 away from transformers."""
    hf_model = make_hf_model(family, tied=False, kv_heads=2, **overrides)
    config = hf_config_dict(hf_model.config)
    assert _gap(hf_model, config) < 1e-5
    assert _gap(hf_model, {**config, **switched_off}) > 1e-3


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_bf16_round_trip_is_bit_exact_for_every_family(family: str) -> None:
    """HF -> megatron -> HF returns every bf16 tensor bit for bit; tied output is the embedding itself."""
    extra = {"head_dim": 16} if family.startswith("gemma") else {}
    model = make_hf_model(family, tied=True, kv_heads=2, **extra).to(torch.bfloat16)
    config = hf_config_dict(model.config)
    hf_state = model.state_dict()
    back = mcore_to_hf_state(hf_to_mcore_state(hf_state, config), config)
    assert back.keys() == hf_state.keys()
    for name, tensor in hf_state.items():
        assert back[name].dtype == torch.bfloat16 and torch.equal(back[name], tensor), name
    assert back["lm_head.weight"] is back["model.embed_tokens.weight"]


def test_gemma2_export_reloads_in_transformers(tmp_path: Path) -> None:
    """hf_to_megatron then megatron_to_hf gives a folder transformers loads with the original logits."""
    from transformers import AutoModelForCausalLM

    hf_model = make_hf_model("gemma2", tied=True, kv_heads=2, **GEMMA2)
    hf_model.save_pretrained(tmp_path / "hf")
    megatron = hf_to_megatron(str(tmp_path / "hf"), str(tmp_path / "megatron"))
    exported = AutoModelForCausalLM.from_pretrained(megatron_to_hf(str(megatron), str(tmp_path / "out"))).eval()
    tokens = _tokens()
    with torch.no_grad():
        assert torch.equal(exported(tokens).logits, hf_model(tokens).logits)


@pytest.mark.parametrize(
    ("family", "overrides", "message"),
    [
        ("gemma3", {**GEMMA, "attn_logit_softcapping": 50.0}, "ignored by transformers' Gemma 3; set it to null"),
        ("gemma3", {**GEMMA, "use_bidirectional_attention": True}, "use_bidirectional_attention=true"),
        ("gemma2", {**GEMMA, "hidden_activation": "relu"}, "hidden_activation='relu' is not supported"),
        ("gemma2", {**GEMMA, "final_logit_softcapping": -1.0}, "final_logit_softcapping=-1.0 must be positive"),
        ("phi3", {"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4}}, "RoPE type 'longrope'"),
        (
            "qwen3",
            {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}},
            "partial_rotary_factor=0.5",
        ),
    ],
)
def test_configs_the_runtime_cannot_compute_are_refused(family: str, overrides: dict, message: str) -> None:
    """Each refusal names the config key and value (after the config was built by transformers)."""
    config = hf_config_dict(make_hf_model(family, tied=False, kv_heads=2, **GEMMA if "gemma" in family else {}).config)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace("[", r"\[")):
        build_gpt_model({**config, **overrides}, device="cpu")


def test_known_names_cover_every_family() -> None:
    """The supported list printed in refusals names each architecture."""
    names = known_names()
    for arch in ("Qwen3ForCausalLM", "MistralForCausalLM", "Phi3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM"):
        assert arch in names


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_bf16_gemma_trains_every_parameter(family: str) -> None:
    """In bf16 (the training dtype) every parameter, post-norms and QK-norms included, gets a gradient, and the
    logits stay within bf16 rounding of the fp32 transformers logits."""
    overrides = GEMMA2 if family == "gemma2" else GEMMA3
    hf_model = make_hf_model(family, tied=False, kv_heads=2, **overrides)
    config = hf_config_dict(hf_model.config)
    gpt = build_gpt_model(config, dtype=torch.bfloat16, device="cpu")
    load_state_into_gpt(gpt, hf_to_mcore_state(hf_model.state_dict(), config))
    tokens = _tokens()
    logits = gpt_logits(gpt, tokens)
    assert logits.dtype == torch.bfloat16
    logits.float().logsumexp(-1).mean().backward()
    assert [n for n, p in gpt.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []
    with torch.no_grad():
        assert_close(logits.float(), hf_model(tokens).logits, atol=0.1, rtol=0.05)
