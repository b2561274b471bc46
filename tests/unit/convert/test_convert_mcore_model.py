"""megatron-core GPTModel built from an HF config: logit parity with transformers, state I/O, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

pytest.importorskip("megatron.core")

from convert_fixtures import VOCAB, make_hf_model  # noqa: E402

from rlvr.convert import hf_to_megatron, load_checkpoint_megatron  # noqa: E402
from rlvr.convert.fusion import split_qkv  # noqa: E402
from rlvr.convert.hf_megatron import hf_config_dict  # noqa: E402
from rlvr.convert.mcore_model import (  # noqa: E402
    build_gpt_model,
    gpt_logits,
    gpt_state_dict,
    load_state_into_gpt,
)
from rlvr.errors import CheckpointError  # noqa: E402

# Layer 0 full, layer 1 sliding (transformers: layers at or above max_window_layers slide); window << 120 tokens.
QWEN_SLIDING = {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 1}
PHI3_PARTIAL_ROPE = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


def _tokens(batch: int = 2, length: int = 120) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(7))


def _gpt_from_checkpoint(root: Path, device: str = "cpu"):
    state, run_config, _ = load_checkpoint_megatron(root)
    model = build_gpt_model(run_config["model"]["hf_config"], device=device)
    load_state_into_gpt(model, state)
    return model.eval(), state


@pytest.mark.parametrize(
    ("family", "tied", "kv_heads", "overrides"),
    [
        ("llama", False, 2, {}),
        ("llama", True, 4, {}),
        ("llama", False, 2, {"rope_parameters": LLAMA3_ROPE, "max_position_embeddings": 16384}),
        ("qwen2", False, 1, {}),
        ("qwen2", True, 2, {}),
        ("qwen2", False, 2, QWEN_SLIDING),
        ("qwen3", False, 2, {}),
        ("qwen3", True, 1, {}),
        ("qwen3", True, 2, QWEN_SLIDING),
        ("mistral", False, 2, {"sliding_window": 16}),
        ("mistral", True, 4, {"sliding_window": None}),
        ("phi3", False, 2, {}),
        ("phi3", True, 1, {"sliding_window": 16}),
        ("phi3", False, 4, {"rope_parameters": PHI3_PARTIAL_ROPE}),
    ],
    ids=[
        "llama-untied-gqa2",
        "llama-tied-gqa1",
        "llama3-rope",
        "qwen2-untied-gqa4",
        "qwen2-tied-gqa2",
        "qwen2-sliding",
        "qwen3-untied",
        "qwen3-tied-gqa4",
        "qwen3-tied-sliding",
        "mistral-sliding16",
        "mistral-tied-full",
        "phi3-untied",
        "phi3-tied-sliding16",
        "phi3-partial-rope",
    ],
)
def test_logits_match_transformers(tmp_path: Path, hf_folder, family, tied, kv_heads, overrides) -> None:
    """The GPTModel rebuilt from the converted checkpoint gives the transformers model's logits (fp32, CPU)."""
    folder, hf_model = hf_folder(family, tied=tied, kv_heads=kv_heads, tokenizer=False, **overrides)
    gpt, _ = _gpt_from_checkpoint(hf_to_megatron(str(folder), str(tmp_path / "megatron")))
    tokens = _tokens()
    with torch.no_grad():
        expected = hf_model(tokens).logits
        got = gpt_logits(gpt, tokens)
    assert got.shape == (2, 120, VOCAB)
    assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_parity_check_detects_a_wrong_qkv_layout(tmp_path: Path, hf_folder) -> None:
    """Control: fusing QKV as a plain [q; k; v] concatenation (the classic mistake) moves logits by > 1e-3,
    so the 1e-5 parity above is evidence of the grouped layout."""
    folder, hf_model = hf_folder("llama", kv_heads=2, tokenizer=False)
    gpt, state = _gpt_from_checkpoint(hf_to_megatron(str(folder), str(tmp_path / "megatron")))
    wrong = dict(state)
    for layer in range(2):
        name = f"decoder.layers.{layer}.self_attention.linear_qkv.weight"
        wrong[name] = torch.cat(split_qkv(state[name], num_heads=4, num_query_groups=2))
    load_state_into_gpt(gpt, wrong)
    tokens = _tokens()
    with torch.no_grad():
        gap = (gpt_logits(gpt, tokens) - hf_model(tokens).logits).abs().max().item()
    assert gap > 1e-3


@pytest.mark.parametrize("rope", [None, LLAMA3_ROPE], ids=["default", "llama3"])
def test_rope_frequencies_match_transformers(rope: dict | None) -> None:
    """The GPTModel's RoPE inverse frequencies equal transformers' (llama3: scaled, and != the unscaled ones).

    With tiny random weights positions move logits too little for the parity test alone to tell the scalings
    apart, so the frequencies are compared directly."""
    overrides = {"rope_parameters": rope, "max_position_embeddings": 16384} if rope else {}
    hf_model = make_hf_model("llama", tied=False, kv_heads=2, **overrides)
    gpt = build_gpt_model(hf_config_dict(hf_model.config), device="cpu")
    hf_freq = hf_model.model.rotary_emb.inv_freq
    assert_close(gpt.rotary_pos_emb.inv_freq, hf_freq, atol=0.0, rtol=1e-6)
    if rope:
        default = 1.0 / rope["rope_theta"] ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16)
        assert not torch.allclose(hf_freq, default)


def test_partial_rope_rotates_the_same_channels_as_transformers() -> None:
    """Phi-3 with partial_rotary_factor 0.5: megatron rotates the first 8 of 16 head channels, as transformers."""
    hf_model = make_hf_model("phi3", tied=False, kv_heads=2, rope_parameters=PHI3_PARTIAL_ROPE)
    gpt = build_gpt_model(hf_config_dict(hf_model.config), device="cpu")
    assert hf_model.model.rotary_emb.inv_freq.shape == (4,)
    assert_close(gpt.rotary_pos_emb.inv_freq, hf_model.model.rotary_emb.inv_freq, atol=0.0, rtol=1e-6)


def _mcore_state(hf_model) -> dict[str, torch.Tensor]:
    from rlvr.convert.state_mapping import hf_to_mcore_state

    return hf_to_mcore_state(hf_model.state_dict(), hf_config_dict(hf_model.config))


def test_state_in_and_out_of_the_model() -> None:
    """load_state_into_gpt then gpt_state_dict returns the same tensors under the fused layer-norm names;
    a wrongly shaped or unknown tensor is refused with its name."""
    hf_model = make_hf_model("qwen2", tied=False, kv_heads=2)
    state = _mcore_state(hf_model)
    gpt = build_gpt_model(hf_config_dict(hf_model.config), device="cpu")
    load_state_into_gpt(gpt, state)
    out = gpt_state_dict(gpt)
    assert out.keys() == state.keys()
    assert all(torch.equal(out[k], v) for k, v in state.items())
    bad = {**state, "decoder.final_layernorm.weight": torch.ones(5), "decoder.extra.weight": torch.ones(1)}
    with pytest.raises(CheckpointError) as err:
        load_state_into_gpt(gpt, bad)
    assert "decoder.final_layernorm.weight is [5], expected [64]" in str(err.value)
    assert "decoder.extra.weight" in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_act": "gelu"}, "hidden_act='gelu' is not supported; supported: gelu_new"),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0}}, "RoPE type 'yarn'"),
        ({"rope_parameters": {**LLAMA3_ROPE, "high_freq_factor": 2.0}}, "differs from megatron-core"),
        ({"attention_bias": False, "mlp_bias": True}, "add_bias_linear"),
    ],
)
def test_unsupported_architectures_are_refused(overrides: dict, message: str) -> None:
    """Configs the local GPTModel would compute differently from transformers raise instead of building."""
    config = hf_config_dict(make_hf_model("llama", tied=False, kv_heads=2).config)
    with pytest.raises(CheckpointError, match=message):
        build_gpt_model({**config, **overrides}, device="cpu")


@pytest.mark.parametrize(
    ("family", "overrides", "ignored"),
    [
        ("mistral", {"sliding_window": 16}, {"sliding_window": None}),
        ("qwen2", QWEN_SLIDING, {"use_sliding_window": False}),
    ],
)
def test_parity_check_detects_an_ignored_window(family: str, overrides: dict, ignored: dict) -> None:
    """Control: building the same weights with full attention moves logits by > 1e-3, so the sliding-window
    parity above is evidence that windows are applied (and applied to the right layers)."""
    hf_model = make_hf_model(family, tied=False, kv_heads=2, **overrides)
    config = hf_config_dict(hf_model.config)
    gpt = build_gpt_model({**config, **ignored, "layer_types": None}, device="cpu").eval()
    load_state_into_gpt(gpt, _mcore_state(hf_model))
    tokens = _tokens()
    with torch.no_grad():
        gap = (gpt_logits(gpt, tokens) - hf_model(tokens).logits).abs().max().item()
    assert gap > 1e-3


def test_bad_sliding_window_configs_are_refused() -> None:
    """A non-positive window or layer types of the wrong length name the key."""
    config = hf_config_dict(make_hf_model("qwen3", tied=False, kv_heads=2, **QWEN_SLIDING).config)
    with pytest.raises(CheckpointError, match="sliding_window=0 must be a positive"):
        build_gpt_model({**config, "sliding_window": 0}, device="cpu")
    with pytest.raises(CheckpointError, match="layer_types has 1 entries for num_hidden_layers=2"):
        build_gpt_model({**config, "layer_types": ["full_attention"]}, device="cpu")
    with pytest.raises(CheckpointError, match=r"layer_types \['chunked_attention'\] are not supported"):
        build_gpt_model({**config, "layer_types": ["full_attention", "chunked_attention"]}, device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("family", "overrides"),
    [
        ("qwen2", {}),
        ("qwen3", QWEN_SLIDING),
        ("phi3", {"sliding_window": 16}),
        (
            "gemma2",
            {"head_dim": 16, "sliding_window": 16, "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0},
        ),
        ("gemma3", {"head_dim": 16, "sliding_window": 16, "sliding_window_pattern": 2}),
    ],
)
def test_logits_match_transformers_on_gpu(tmp_path: Path, hf_folder, family: str, overrides: dict) -> None:
    """On a GPU the same checkpoint gives the transformers logits (fp32; TF32 off for a tight comparison)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    folder, hf_model = hf_folder(family, kv_heads=2, tokenizer=False, **overrides)
    gpt, _ = _gpt_from_checkpoint(hf_to_megatron(str(folder), str(tmp_path / "megatron")), device="cuda")
    tokens = _tokens().cuda()
    with torch.no_grad():
        expected = hf_model.cuda()(tokens).logits
        got = gpt_logits(gpt, tokens)
    assert_close(got, expected, atol=1e-4, rtol=1e-4)
