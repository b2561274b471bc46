"""Family registry and whole-state mapping HF <-> megatron-core names (no megatron-core needed)."""

from __future__ import annotations

import pytest
import torch
from convert_fixtures import make_hf_model

from rlvr.convert.families import get_family
from rlvr.convert.fusion import fuse_gate_up, fuse_qkv
from rlvr.convert.hf_megatron import hf_config_dict
from rlvr.convert.state_mapping import hf_to_mcore_state, mcore_to_hf_state, resolve_family
from rlvr.errors import CheckpointError


def test_family_found_by_architecture_then_model_type() -> None:
    """``architectures`` decides first; a config without it falls back to ``model_type``."""
    assert get_family({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"}).name == "qwen2"
    assert get_family({"model_type": "llama"}).name == "llama"


def test_unknown_architecture_lists_known_names() -> None:
    """An unsupported architecture is a CheckpointError naming it and every known name."""
    with pytest.raises(CheckpointError) as err:
        get_family({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}, source="x/config.json")
    message = str(err.value)
    assert "x/config.json" in message and "GPT2LMHeadModel" in message
    for name in ("LlamaForCausalLM", "Qwen2ForCausalLM", "llama", "qwen2"):
        assert name in message


@pytest.mark.parametrize(
    ("family", "overrides", "tied", "rows"),
    [
        ("llama", {}, False, 3 + 2 * 6),  # embedding, final norm, output layer + 6 per layer
        ("llama", {}, True, 2 + 2 * 6),
        ("llama", {"attention_bias": True, "mlp_bias": True}, False, 3 + 2 * 10),  # + qkv/proj/fc1/fc2 biases
        ("qwen2", {}, False, 3 + 2 * 7),  # + qkv bias per layer
    ],
)
def test_table_rows_follow_config_switches(family: str, overrides: dict, tied: bool, rows: int) -> None:
    """Optional rows (biases, untied output layer) appear exactly when the config turns them on."""
    config = {
        "model_type": family, "num_hidden_layers": 2, "hidden_size": 8, "intermediate_size": 12,
        "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 10, "tie_word_embeddings": tied,
        **overrides,
    }  # fmt: skip
    fam, dims = resolve_family(config)
    assert len(fam.expand(dims)) == rows


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "mistral"])
def test_hf_state_maps_to_fused_mcore_tensors(family: str) -> None:
    """linear_qkv is the grouped fusion of q/k/v, linear_fc1 is [gate; up], norms use the fused names."""
    model = make_hf_model(family, tied=False, kv_heads=2)
    hf_state = model.state_dict()
    mcore = hf_to_mcore_state(hf_state, hf_config_dict(model.config))
    p = "model.layers.1."
    expected_qkv = fuse_qkv(
        hf_state[p + "self_attn.q_proj.weight"], hf_state[p + "self_attn.k_proj.weight"],
        hf_state[p + "self_attn.v_proj.weight"], num_query_groups=2,
    )  # fmt: skip
    assert torch.equal(mcore["decoder.layers.1.self_attention.linear_qkv.weight"], expected_qkv)
    expected_fc1 = fuse_gate_up(hf_state[p + "mlp.gate_proj.weight"], hf_state[p + "mlp.up_proj.weight"])
    assert torch.equal(mcore["decoder.layers.1.mlp.linear_fc1.weight"], expected_fc1)
    assert torch.equal(
        mcore["decoder.layers.1.self_attention.linear_qkv.layer_norm_weight"], hf_state[p + "input_layernorm.weight"]
    )
    assert torch.equal(
        mcore["decoder.layers.1.mlp.linear_fc1.layer_norm_weight"], hf_state[p + "post_attention_layernorm.weight"]
    )
    assert ("decoder.layers.1.self_attention.linear_qkv.bias" in mcore) == (family == "qwen2")
    if family == "qwen3":
        for qk in ("q", "k"):
            got = mcore[f"decoder.layers.1.self_attention.{qk}_layernorm.weight"]
            assert torch.equal(got, hf_state[f"{p}self_attn.{qk}_norm.weight"])


@pytest.mark.parametrize(
    ("family", "tied", "kv_heads", "overrides"),
    [
        ("llama", False, 4, {}),
        ("llama", True, 1, {}),
        ("llama", False, 2, {"attention_bias": True, "mlp_bias": True}),
        ("qwen2", True, 2, {}),
        ("qwen3", False, 2, {}),
        ("qwen3", True, 1, {"attention_bias": True}),
        ("mistral", False, 2, {}),
        ("mistral", True, 4, {}),
        ("phi3", False, 2, {}),
        ("phi3", True, 4, {}),
        ("gemma2", False, 2, {"head_dim": 16}),
        ("gemma3", False, 1, {"head_dim": 16}),
    ],
)
def test_state_round_trip_is_bit_exact(family: str, tied: bool, kv_heads: int, overrides: dict) -> None:
    """mcore_to_hf(hf_to_mcore(s)) == s for every tensor; with tied embeddings lm_head is the embedding itself."""
    model = make_hf_model(family, tied=tied, kv_heads=kv_heads, **overrides)
    config = hf_config_dict(model.config)
    hf_state = model.state_dict()
    back = mcore_to_hf_state(hf_to_mcore_state(hf_state, config), config)
    assert back.keys() == hf_state.keys()
    for name, tensor in hf_state.items():
        assert torch.equal(back[name], tensor), name
    if tied:
        assert back["lm_head.weight"] is back["model.embed_tokens.weight"]


def test_phi3_packed_projections_map_to_megatron_layouts() -> None:
    """Phi-3's qkv_proj ([q; k; v] blocks) is regrouped per query group; gate_up_proj is linear_fc1 as is."""
    model = make_hf_model("phi3", tied=False, kv_heads=2)
    hf_state = model.state_dict()
    mcore = hf_to_mcore_state(hf_state, hf_config_dict(model.config))
    q, k, v = hf_state["model.layers.1.self_attn.qkv_proj.weight"].split([64, 32, 32])
    expected = fuse_qkv(q, k, v, num_query_groups=2)
    assert torch.equal(mcore["decoder.layers.1.self_attention.linear_qkv.weight"], expected)
    assert not torch.equal(expected, hf_state["model.layers.1.self_attn.qkv_proj.weight"])
    gate_up = hf_state["model.layers.1.mlp.gate_up_proj.weight"]
    assert torch.equal(mcore["decoder.layers.1.mlp.linear_fc1.weight"], gate_up)


def test_bad_states_name_every_offending_tensor() -> None:
    """Missing, unexpected and wrongly shaped tensors are all named, with got/expected shapes."""
    model = make_hf_model("llama", tied=False, kv_heads=2)
    config = hf_config_dict(model.config)
    state = dict(model.state_dict())
    del state["model.layers.0.mlp.up_proj.weight"]
    state["model.layers.0.extra.weight"] = torch.zeros(1)
    state["model.layers.1.self_attn.k_proj.weight"] = torch.zeros(16, 64)
    with pytest.raises(CheckpointError) as err:
        hf_to_mcore_state(state, config, source="tiny-src")
    message = str(err.value)
    assert "tiny-src" in message
    assert "missing tensors: model.layers.0.mlp.up_proj.weight" in message
    assert "unexpected tensors: model.layers.0.extra.weight" in message
    assert "model.layers.1.self_attn.k_proj.weight is [16, 64], expected [32, 64]" in message

    mcore = hf_to_mcore_state(model.state_dict(), config)
    mcore["decoder.final_layernorm.weight"] = torch.ones(63)
    with pytest.raises(CheckpointError, match=r"decoder.final_layernorm.weight is \[63\], expected \[64\]"):
        mcore_to_hf_state(mcore, config)
