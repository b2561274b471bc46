"""The convert steps HF -> checkpoint_megatron -> HF, the in-memory bridges, and their bad-input handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("megatron.core")

from convert_fixtures import make_hf_model  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from rlvr.convert import (  # noqa: E402
    hf_to_megatron,
    load_checkpoint_megatron,
    load_hf_model_from_megatron,
    megatron_to_hf,
    read_run_config,
    resolve_iteration_dir,
    save_hf_model_as_megatron,
)
from rlvr.errors import CheckpointError, ConfigError  # noqa: E402


def _no_leftovers(path: Path) -> bool:
    """Neither ``path`` nor a temporary sibling of it exists."""
    return not path.exists() and not any(p.name.startswith(f".{path.name}.") for p in path.parent.glob(".*"))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("kv_heads", [4, 2], ids=["gqa1", "gqa2"])
def test_round_trip_is_bit_exact(tmp_path: Path, hf_folder, family: str, tied: bool, kv_heads: int) -> None:
    """HF -> Megatron -> HF returns every tensor of model.safetensors bit for bit, and the export loads with
    AutoModelForCausalLM into a model whose state equals the original's."""
    folder, model = hf_folder(family, tied=tied, kv_heads=kv_heads)
    root = hf_to_megatron(str(folder), str(tmp_path / "megatron"))
    out = megatron_to_hf(str(root), str(tmp_path / "hf_out"))
    original, exported = load_file(folder / "model.safetensors"), load_file(out / "model.safetensors")
    assert original.keys() == exported.keys()
    for name, tensor in original.items():
        assert tensor.dtype == exported[name].dtype and torch.equal(tensor, exported[name]), name
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert type(reloaded) is type(model)
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


def test_tokenizer_and_source_travel_with_the_checkpoint(tmp_path: Path, hf_folder) -> None:
    """The tokenizer files go into iter_*/tokenizer/ and into the export; run_config names the source folder."""
    folder, _ = hf_folder("llama")
    root = hf_to_megatron(str(folder), str(tmp_path / "megatron"))
    iter_dir = resolve_iteration_dir(root)
    assert (iter_dir / "tokenizer" / "tokenizer.json").is_file()
    assert read_run_config(root)["model"]["hf_model_id"] == str(folder.resolve())
    out = megatron_to_hf(str(iter_dir), str(tmp_path / "hf_out"))
    text = "t1 t2 t30 <s>"
    exported, source = AutoTokenizer.from_pretrained(out), AutoTokenizer.from_pretrained(folder)
    assert exported(text)["input_ids"] == source(text)["input_ids"]


def test_torch_dtype_casts_once_and_export_goes_back_to_the_source_dtype(tmp_path: Path, hf_folder) -> None:
    """torch_dtype=bf16 stores bf16 tensors equal to the fp32 source cast once; the export is written in the
    source model's dtype (float32) by default, and in bf16 on request."""
    folder, model = hf_folder("qwen2")
    root = hf_to_megatron(str(folder), str(tmp_path / "megatron"), torch_dtype="bf16")
    state, run_config, _ = load_checkpoint_megatron(root)
    assert run_config["model"]["params_dtype"] == "bfloat16"
    assert run_config["model"]["source_dtype"] == "float32"
    assert all(t.dtype == torch.bfloat16 for t in state.values())
    source = model.state_dict()
    as_source = load_file(megatron_to_hf(str(root), str(tmp_path / "fp32")) / "model.safetensors")
    for name, tensor in as_source.items():
        assert tensor.dtype == torch.float32, name
        assert torch.equal(tensor, source[name].to(torch.bfloat16).float()), name
    exported = load_file(megatron_to_hf(str(root), str(tmp_path / "bf16"), torch_dtype="bf16") / "model.safetensors")
    for name, tensor in exported.items():
        assert tensor.dtype == torch.bfloat16, name
        assert torch.equal(tensor, source[name].to(torch.bfloat16)), name
    with pytest.raises(ConfigError, match="torch_dtype: unknown dtype 'fp8'; known: float32"):
        hf_to_megatron(str(folder), str(tmp_path / "x"), torch_dtype="fp8")


def test_pytorch_bin_folder_converts(tmp_path: Path) -> None:
    """A folder with pytorch_model.bin instead of safetensors converts to the same tensors."""
    model = make_hf_model("llama", tied=False, kv_heads=2)
    folder = tmp_path / "bin_model"
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    loaded = load_hf_model_from_megatron(hf_to_megatron(str(folder), str(tmp_path / "megatron")))
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_missing_or_unusable_hf_input_is_a_clear_error(tmp_path: Path, hf_folder) -> None:
    """A missing local path, an unreachable hub id, a folder without config.json or weights, an unknown
    architecture, a tensor of the wrong shape: each a CheckpointError naming the problem, no output folder."""
    target = tmp_path / "megatron"
    with pytest.raises(CheckpointError, match="does not exist"):
        hf_to_megatron(str(tmp_path / "nope"), str(target))
    with pytest.raises(CheckpointError, match="not an existing folder, and fetching it from the Hugging Face hub"):
        hf_to_megatron("rlvr-test-org/no-such-model", str(target))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        hf_to_megatron(str(empty), str(target))
    folder, model = hf_folder("llama")
    (folder / "model.safetensors").rename(folder / "moved.safetensors")
    with pytest.raises(CheckpointError, match="no model weights"):
        hf_to_megatron(str(folder), str(target))
    (folder / "moved.safetensors").rename(folder / "model.safetensors")

    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(json.dumps({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}))
    with pytest.raises(CheckpointError, match=r"unsupported model architecture.*known: .*LlamaForCausalLM"):
        hf_to_megatron(str(gpt2), str(target))

    weights = load_file(folder / "model.safetensors")
    weights["model.layers.1.mlp.down_proj.weight"] = torch.zeros(64, 95)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    wrong_shape = r"model.layers.1.mlp.down_proj.weight is \[64, 95\], expected \[64, 96\]"
    with pytest.raises(CheckpointError, match=wrong_shape):
        hf_to_megatron(str(folder), str(target))
    assert _no_leftovers(target)


def test_failed_conversion_keeps_the_previous_output(tmp_path: Path, hf_folder, monkeypatch) -> None:
    """Re-running into an existing megatron_path replaces it only on success: a failure after the tensors are
    written (disk full while copying tokenizer files) or before (bad config.json) leaves the old one intact."""
    import rlvr.convert.artifact as artifact

    folder, model = hf_folder("qwen2")
    target = tmp_path / "megatron"
    hf_to_megatron(str(folder), str(target))

    def disk_full(*_args):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(artifact, "copy_tokenizer_assets", disk_full)
        with pytest.raises(OSError, match="No space left"):
            hf_to_megatron(str(folder), str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf_qwen2_untied_kv2", "megatron"]
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        hf_to_megatron(str(folder), str(target))
    state, _, _ = load_checkpoint_megatron(target)
    assert torch.equal(state["embedding.word_embeddings.weight"], model.state_dict()["model.embed_tokens.weight"])


def test_export_of_a_non_checkpoint_writes_nothing(tmp_path: Path) -> None:
    """megatron_to_hf on a folder that is not a checkpoint raises CheckpointError and creates no hf_path."""
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint_megatron"):
        megatron_to_hf(str(plain), str(tmp_path / "hf_out"))
    assert _no_leftovers(tmp_path / "hf_out")


def test_in_memory_bridges_for_training(tmp_path: Path, hf_folder) -> None:
    """load_hf_model_from_megatron gives the HF model; after a weight update, save_hf_model_as_megatron adds
    iteration 3 (trackers, train state, extra run-config section) and the checkpoint holds the new weights."""
    folder, _ = hf_folder("llama", tied=True)
    root = hf_to_megatron(str(folder), str(tmp_path / "megatron"))
    model = load_hf_model_from_megatron(root)
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight.add_(1.0)
    iter_dir = save_hf_model_as_megatron(
        model, resolve_iteration_dir(root) / "tokenizer", root, 3, {"rlvr": {"step": 3}}, train_state={"step": 3}
    )
    assert iter_dir == root / "iter_0000003" and resolve_iteration_dir(root) == iter_dir
    assert read_run_config(root)["rlvr"] == {"step": 3}
    assert (iter_dir / "tokenizer" / "tokenizer.json").is_file() and (iter_dir / "train_state.pt").is_file()
    again = load_hf_model_from_megatron(root)
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name
    before = load_hf_model_from_megatron(root / "iter_0000000")
    assert not torch.equal(before.model.layers[0].mlp.up_proj.weight, model.model.layers[0].mlp.up_proj.weight)
