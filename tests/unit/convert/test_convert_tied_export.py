"""Tied embeddings and the export dtype through the checkpoint_megatron artifact and the HF export.

The user model is a tied, bf16 Qwen2-style folder with a byte-level BPE tokenizer and a chat template
(tests/tied_user_model.py). The rlvr pipeline converts it to float32, trains in ``policy.precision`` float32,
writes its artifact, then exports: the export must be bf16 (the user's dtype, not the training's), still tied,
and hold the trained weights.
"""

from __future__ import annotations

import json

import pytest
import torch
from convert_fixtures import make_hf_model
from safetensors import safe_open

from rlvr.convert.artifact import load_checkpoint_megatron, read_run_config
from rlvr.convert.hf_megatron import (
    declared_dtype,
    export_dtype,
    hf_to_megatron,
    load_hf_model_from_megatron,
    megatron_to_hf,
    save_hf_model_as_megatron,
)
from rlvr.stages.__main__ import main as stages_main
from tests.tied_user_model import save_tied_user_model

MESSAGES = [{"role": "user", "content": "What is 12 + 7?"}]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """user folder -> hf_to_megatron (float32) -> HF model in float32 -> weights moved -> rlvr-style artifact."""
    tmp = tmp_path_factory.mktemp("tied_export")
    folder = save_tied_user_model(tmp / "user_model")
    sft = hf_to_megatron(str(folder), str(tmp / "sft"), "float32")
    model = load_hf_model_from_megatron(sft, "float32")
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with torch.no_grad():  # what training does to a tied model: one update, seen by both uses of the matrix
        torch.manual_seed(3)
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 1e-2)
    root = tmp / "rlvr_artifact"
    save_hf_model_as_megatron(
        model, folder, root, 7, {"rlvr": {"steps": 7}}, source_dtype=export_dtype(read_run_config(sft))
    )
    return {"folder": folder, "sft": sft, "model": model, "root": root, "tmp": tmp}


def test_converted_checkpoint_stores_the_tie_once_and_records_the_source_dtype(trained):
    """checkpoint_megatron of a tied model: no output_layer tensor, share_embeddings true, params in float32,
    source_dtype bfloat16 (the user's config.json), carried into the trained artifact."""
    for path in (trained["sft"], trained["root"]):
        state, run_config, _ = load_checkpoint_megatron(path)
        assert "output_layer.weight" not in state and "embedding.word_embeddings.weight" in state
        assert run_config["model"]["share_embeddings_and_output_weights"] is True
        assert run_config["model"]["params_dtype"] == "float32"
        assert run_config["model"]["source_dtype"] == "bfloat16"
        assert state["embedding.word_embeddings.weight"].dtype == torch.float32


def test_default_export_is_tied_bf16_with_the_trained_weights(trained, tmp_path):
    """megatron_to_hf without torch_dtype: config.json says bfloat16 and tie_word_embeddings, one stored
    embedding; AutoModelForCausalLM reloads it tied, in bf16, equal to the trained weights cast once."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = megatron_to_hf(str(trained["root"]), str(tmp_path / "hf"))
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "bfloat16" and config["tie_word_embeddings"] is True
    with safe_open(str(out / "model.safetensors"), "pt") as fh:
        assert "lm_head.weight" not in set(fh.keys())
        assert fh.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.dtype == torch.bfloat16
    assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
    trained_state = trained["model"].state_dict()
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, trained_state[name].to(torch.bfloat16)), name
    user = AutoModelForCausalLM.from_pretrained(trained["folder"])
    moved = (reloaded.model.embed_tokens.weight.float() - user.model.embed_tokens.weight.float()).abs().max()
    assert moved > 1e-3
    exported_tok, user_tok = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(trained["folder"])
    assert exported_tok.apply_chat_template(MESSAGES, add_generation_prompt=True) == user_tok.apply_chat_template(
        MESSAGES, add_generation_prompt=True
    )


def test_torch_dtype_overrides_the_source_dtype(trained, tmp_path):
    """torch_dtype=float32 exports the training precision's values bit for bit, still tied."""
    from transformers import AutoModelForCausalLM

    out = megatron_to_hf(str(trained["root"]), str(tmp_path / "hf32"), torch_dtype="float32")
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    assert reloaded.dtype == torch.float32 and reloaded.lm_head.weight is reloaded.model.embed_tokens.weight
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, trained["model"].state_dict()[name]), name


def test_stage_command_with_an_empty_dtype_uses_the_source_dtype(trained, tmp_path):
    """``python -m rlvr.stages megatron_to_hf`` with ``torch_dtype: null`` in its stage config (what the rlvr rule
    writes when checkpointing.export_dtype is null) writes bf16; ``torch_dtype: float16`` writes float16."""
    from rlvr.stages.stage_config import write_stage_configs

    for dtype, expected in ((None, "bfloat16"), ("float16", "float16")):
        out = tmp_path / f"hf_{expected}"
        (cfg,) = write_stage_configs(
            tmp_path / expected, {"megatron_to_hf": {"torch_dtype": dtype, "hf_model_id": None}}
        )
        code = stages_main(
            ["megatron_to_hf", "--megatron-path", str(trained["root"]), "--hf-path", str(out), "--config", str(cfg)]
        )
        assert code == 0
        assert json.loads((out / "config.json").read_text())["dtype"] == expected


def test_declared_dtype_falls_back_to_the_stored_weights(tmp_path):
    """A config.json without a dtype (or "auto") declares nothing: the weights' own dtype is the source dtype;
    an artifact written before source_dtype was recorded exports in its HF config's dtype, then params_dtype."""
    fp16 = {"w": torch.zeros(2, dtype=torch.float16), "step": torch.zeros(1, dtype=torch.int64)}
    assert declared_dtype({}, fp16) == torch.float16
    assert declared_dtype({"torch_dtype": "auto"}, fp16) == torch.float16
    assert declared_dtype({"torch_dtype": "bfloat16"}, fp16) == torch.bfloat16
    assert declared_dtype({"dtype": "float32", "torch_dtype": "bfloat16"}, fp16) == torch.float32
    old = {"model": {"params_dtype": "float32", "hf_config": {"dtype": "bfloat16"}}}
    assert export_dtype(old) == torch.bfloat16
    assert export_dtype({"model": {"params_dtype": "float16", "hf_config": {}}}) == torch.float16


def test_untied_model_keeps_its_output_layer(tmp_path):
    """An untied model's artifact keeps output_layer.weight as its own tensor (the tie handling must not drop a
    real output layer); without a source dtype given, the model's own dtype is recorded."""
    model = make_hf_model("qwen2", tied=False, kv_heads=2)
    save_hf_model_as_megatron(model, None, tmp_path / "ckpt", 0)
    state, run_config, _ = load_checkpoint_megatron(tmp_path / "ckpt")
    assert torch.equal(state["output_layer.weight"], model.lm_head.weight.detach())
    assert run_config["model"]["source_dtype"] == "float32"
