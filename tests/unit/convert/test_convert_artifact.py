"""The ``checkpoint_megatron`` folder: layout, trackers, resolution, megatron-core compatibility, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

pytest.importorskip("megatron.core")

from convert_fixtures import make_hf_model  # noqa: E402

from rlvr.convert.artifact import (  # noqa: E402
    is_checkpoint_megatron,
    load_checkpoint_megatron,
    make_run_config,
    read_run_config,
    resolve_iteration_dir,
    save_checkpoint_megatron,
)
from rlvr.convert.hf_megatron import hf_config_dict  # noqa: E402
from rlvr.convert.state_mapping import hf_to_mcore_state  # noqa: E402
from rlvr.errors import CheckpointError  # noqa: E402


def _state_and_config(family: str = "qwen2", tied: bool = False, seed: int = 0):
    model = make_hf_model(family, tied=tied, kv_heads=2, seed=seed)
    config = hf_config_dict(model.config)
    state = hf_to_mcore_state(model.state_dict(), config)
    return state, make_run_config(config, hf_model_id="tiny/source", params_dtype=torch.float32)


def _siblings(path: Path) -> list[str]:
    """Everything beside ``path`` in its parent (temporary folders would show up here)."""
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name) if path.parent.exists() else []


def test_save_writes_bridge_style_layout(tmp_path: Path) -> None:
    """Root tracker reads 0; iter_0000000 holds a torch_dist save, run_config.yaml and the tokenizer files."""
    state, run_config = _state_and_config()
    tokenizer = tmp_path / "tok"
    tokenizer.mkdir()
    (tokenizer / "tokenizer.json").write_text("{}")
    (tokenizer / "README.md").write_text("not a tokenizer file")
    root = tmp_path / "ckpt"
    iter_dir = save_checkpoint_megatron(root, state, run_config=run_config, tokenizer_dir=tokenizer)
    assert iter_dir == root / "iter_0000000"
    assert (root / "latest_checkpointed_iteration.txt").read_text().strip() == "0"
    names = {p.name for p in iter_dir.iterdir()}
    assert {".metadata", "common.pt", "metadata.json", "run_config.yaml", "tokenizer"} <= names
    assert any(n.endswith(".distcp") for n in names)
    assert json.loads((iter_dir / "metadata.json").read_text())["sharded_backend"] == "torch_dist"
    assert sorted(p.name for p in (iter_dir / "tokenizer").iterdir()) == ["tokenizer.json"]
    recorded = yaml.safe_load((iter_dir / "run_config.yaml").read_text())
    assert recorded["model"]["hf_model_id"] == "tiny/source"
    assert recorded["model"]["hf_config"]["model_type"] == "qwen2"
    assert recorded["model"]["num_layers"] == 2 and recorded["checkpoint"]["iteration"] == 0
    assert _siblings(root) == ["tok"]
    assert is_checkpoint_megatron(root) and is_checkpoint_megatron(iter_dir)


@pytest.mark.parametrize("tied", [False, True])
def test_load_returns_saved_tensors_bit_exact(tmp_path: Path, tied: bool) -> None:
    """Loading from the root or the iteration folder returns every saved tensor unchanged, nothing else."""
    state, run_config = _state_and_config(tied=tied)
    iter_dir = save_checkpoint_megatron(tmp_path / "ckpt", state, run_config=run_config)
    for path in (tmp_path / "ckpt", iter_dir):
        loaded, loaded_config, got_dir = load_checkpoint_megatron(path)
        assert got_dir == iter_dir and loaded_config["model"]["family"] == "qwen2"
        assert loaded.keys() == state.keys()
        for name, tensor in state.items():
            assert torch.equal(loaded[name], tensor), name


def test_gptmodel_loads_the_folder_with_its_own_sharded_state_dict(tmp_path: Path) -> None:
    """megatron-core's own loader, driven by GPTModel.sharded_state_dict(), finds every key (strict) and the
    weights it loads equal the saved state: the layout is the one megatron-core writes."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.validation import StrictHandling

    from rlvr.convert.mcore_model import build_gpt_model, gpt_state_dict

    state, run_config = _state_and_config()
    iter_dir = save_checkpoint_megatron(tmp_path / "ckpt", state, run_config=run_config)
    model = build_gpt_model(run_config["model"]["hf_config"])
    loaded, missing, unexpected = dist_checkpointing.load(
        model.sharded_state_dict(), str(iter_dir), strict=StrictHandling.RETURN_ALL
    )
    assert not missing and not unexpected
    assert (loaded.pop("checkpoint_version"), loaded.pop("iteration")) == (3.0, 0)  # common.pt entries
    model.load_state_dict(loaded)
    for name, tensor in gpt_state_dict(model).items():
        assert torch.equal(tensor, state[name]), name


def test_new_iteration_moves_trackers_and_keeps_older_ones(tmp_path: Path) -> None:
    """Saving iteration 5 into an existing root repoints both trackers; iteration 0 stays readable by path."""
    root = tmp_path / "ckpt"
    first, run_config = _state_and_config(seed=0)
    second, _ = _state_and_config(seed=1)
    save_checkpoint_megatron(root, first, run_config=run_config)
    save_checkpoint_megatron(root, second, run_config=run_config, iteration=5, train_state={"step": 5})
    assert (root / "latest_checkpointed_iteration.txt").read_text().strip() == "5"
    assert torch.load(root / "latest_train_state.pt", weights_only=True) == {"step": 5}
    assert resolve_iteration_dir(root) == root / "iter_0000005"
    name = "decoder.layers.0.self_attention.linear_qkv.weight"
    assert torch.equal(load_checkpoint_megatron(root)[0][name], second[name])
    assert torch.equal(load_checkpoint_megatron(root / "iter_0000000")[0][name], first[name])
    assert read_run_config(root)["checkpoint"]["iteration"] == 5


def test_resolution_errors_say_what_is_wrong(tmp_path: Path) -> None:
    """Missing path, a file, a plain folder, a root without tracker, a bad or dangling tracker: each named."""
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_iteration_dir(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="found a file"):
        resolve_iteration_dir(tmp_path / "file")
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(CheckpointError, match="not a checkpoint_megatron"):
        resolve_iteration_dir(plain)
    assert not is_checkpoint_megatron(plain)

    state, run_config = _state_and_config()
    root = tmp_path / "ckpt"
    save_checkpoint_megatron(root, state, run_config=run_config)
    tracker = root / "latest_checkpointed_iteration.txt"
    tracker.write_text("seven")
    with pytest.raises(CheckpointError, match="expected an iteration number"):
        resolve_iteration_dir(root)
    tracker.write_text("7")
    with pytest.raises(CheckpointError, match="iter_0000007 does not exist"):
        resolve_iteration_dir(root)
    tracker.unlink()
    with pytest.raises(CheckpointError, match=r"iter_0000000 but no latest_checkpointed_iteration\.txt"):
        load_checkpoint_megatron(root)


def test_incomplete_or_foreign_iteration_folders_are_refused(tmp_path: Path) -> None:
    """An iteration without metadata.json, or whose run_config lacks the HF config, is a CheckpointError."""
    state, run_config = _state_and_config()
    iter_dir = save_checkpoint_megatron(tmp_path / "ckpt", state, run_config=run_config)
    (iter_dir / "run_config.yaml").write_text(yaml.safe_dump({"model": {"num_layers": 2}}))
    with pytest.raises(CheckpointError, match="no model.hf_config"):
        load_checkpoint_megatron(iter_dir)
    (iter_dir / "metadata.json").unlink()
    with pytest.raises(CheckpointError, match="no metadata.json"):
        load_checkpoint_megatron(iter_dir)


def test_tensor_with_wrong_shape_is_named_on_load(tmp_path: Path) -> None:
    """Tensors that disagree with the recorded architecture (here a larger MLP) are named with both shapes."""
    state, run_config = _state_and_config()
    iter_dir = save_checkpoint_megatron(tmp_path / "ckpt", state, run_config=run_config)
    recorded = yaml.safe_load((iter_dir / "run_config.yaml").read_text())
    recorded["model"]["hf_config"]["intermediate_size"] = 100
    (iter_dir / "run_config.yaml").write_text(yaml.safe_dump(recorded))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint_megatron(tmp_path / "ckpt")
    assert "decoder.layers.0.mlp.linear_fc1.weight is [192, 64], expected [200, 64]" in str(err.value)


def test_bad_state_or_failed_write_leaves_no_folder(tmp_path: Path) -> None:
    """A wrong tensor is refused before writing; a failure mid-write (missing tokenizer folder, after the
    tensors are on disk) removes everything: no root, no temporary sibling."""
    state, run_config = _state_and_config()
    bad = dict(state)
    bad["output_layer.weight"] = torch.zeros(3, 64)
    root = tmp_path / "out" / "ckpt"
    with pytest.raises(CheckpointError, match=r"output_layer.weight is \[3, 64\], expected \[48, 64\]"):
        save_checkpoint_megatron(root, bad, run_config=run_config)
    assert not root.exists() and _siblings(root) == []
    with pytest.raises(FileNotFoundError):
        save_checkpoint_megatron(root, state, run_config=run_config, tokenizer_dir=tmp_path / "missing_tok")
    assert not root.exists() and _siblings(root) == []


def test_existing_non_checkpoint_folder_is_not_overwritten(tmp_path: Path) -> None:
    """Saving into a non-empty folder that is not a checkpoint root refuses and leaves the folder alone."""
    state, run_config = _state_and_config()
    target = tmp_path / "data"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not a checkpoint_megatron root"):
        save_checkpoint_megatron(target, state, run_config=run_config)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]


@pytest.mark.slow
def test_save_needs_no_main_guard(tmp_path: Path) -> None:
    """A script that saves at module level (no ``if __name__ == "__main__"``) completes: the write is
    synchronous and starts no spawn-context process that would re-run the script."""
    script = tmp_path / "save_unguarded.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path[:0] = {[str(Path(__file__).parent), str(Path(__file__).parents[3] / "src")]!r}
            from test_convert_artifact import _state_and_config
            from rlvr.convert.artifact import save_checkpoint_megatron
            state, run_config = _state_and_config()
            save_checkpoint_megatron({str(tmp_path / "ckpt")!r}, state, run_config=run_config)
            print("SAVED-ONCE")
            """
        )
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("SAVED-ONCE") == 1
    assert load_checkpoint_megatron(tmp_path / "ckpt")[2].name == "iter_0000000"
