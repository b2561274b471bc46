"""Step checkpoints of a GRPO run: atomic saves, retention, fingerprinted resume (rlvr.grpo.step_ckpts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rlvr.grpo import step_ckpts
from rlvr.grpo.step_ckpts import StepCheckpoints, file_digest, run_fingerprint, tree_digest

MODEL = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([0.5, -1.5])}


def make(root: Path, fingerprint: str = "fp-a", **kwargs) -> StepCheckpoints:
    kwargs.setdefault("metric_name", "val:accuracy")
    return StepCheckpoints(root, fingerprint=fingerprint, **kwargs)


def save(ckpts: StepCheckpoints, step: int, metric: float | None = None, **info) -> Path:
    info = {"consumed_prompts": 8 * step, "total_steps": step, **info}
    if metric is not None:
        info[ckpts.metric_name] = metric
    return ckpts.save(
        step,
        model_state={k: v + step for k, v in MODEL.items()},
        optimizer_state={"optimizer": {"state": {}, "param_groups": [{"lr": 0.1 * step}]}, "scheduler": None},
        info=info,
    )


def test_save_writes_complete_step_folder(tmp_path):
    """A saved step holds weights, optimizer state and training_info (with step and fingerprint), no tmp_ left."""
    ckpts = make(tmp_path / "ckpts")
    path = save(ckpts, 3, metric=0.25)
    assert path == tmp_path / "ckpts" / "step_3"
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["step_3"]
    info = json.loads((path / "training_info.json").read_text())
    assert info == {"consumed_prompts": 24, "total_steps": 3, "val:accuracy": 0.25, "step": 3, "fingerprint": "fp-a"}
    point = make(tmp_path / "ckpts").find_resume_point(log=lambda _: None)
    model, optimizer = StepCheckpoints.load(point)
    torch.testing.assert_close(model["w"], MODEL["w"] + 3, rtol=0, atol=0)
    torch.testing.assert_close(model["b"], MODEL["b"] + 3, rtol=0, atol=0)
    assert optimizer["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.3)


def test_failed_save_never_appears_as_a_step(tmp_path, monkeypatch):
    """A save that dies half-way removes its tmp_step_N (a kill -9 can still leave one: resume ignores and deletes
    it) and never appears as a step; resume uses the last complete step."""
    ckpts = make(tmp_path / "ckpts")
    save(ckpts, 2)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(step_ckpts.torch, "save", crash)  # the optimizer file is written after the weights
    with pytest.raises(OSError, match="disk full"):
        save(ckpts, 4)
    names = sorted(p.name for p in (tmp_path / "ckpts").iterdir())
    assert names == ["step_2"]
    assert ckpts.steps() == [2]
    (tmp_path / "ckpts" / "tmp_step_4" / "policy").mkdir(parents=True)  # what a kill -9 mid-save leaves
    messages: list[str] = []
    point = make(tmp_path / "ckpts").find_resume_point(log=messages.append)
    assert point.step == 2 and point.info["consumed_prompts"] == 16
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["step_2"]
    assert "resuming from" in messages[0] and "step 2" in messages[0]


def test_resume_point_is_newest_complete_step(tmp_path):
    """Among step_2, step_10 and stale tmp_step_12 folders the resume point is step_10 (numeric, not lexical)."""
    ckpts = make(tmp_path / "ckpts")
    for step in (2, 10, 4):
        save(ckpts, step)
    stale = tmp_path / "ckpts" / "tmp_step_12"
    (stale / "policy").mkdir(parents=True)
    (stale / "training_info.json").write_text(json.dumps({"step": 12, "fingerprint": "fp-a"}))
    point = make(tmp_path / "ckpts").find_resume_point(log=lambda _: None)
    assert (point.step, point.path.name, point.info["consumed_prompts"]) == (10, "step_10", 80)
    assert not stale.exists()
    assert make(tmp_path / "ckpts").steps() == [2, 4, 10]


def test_no_checkpoints_means_fresh_start(tmp_path):
    """A missing or empty checkpoint folder gives no resume point and is left as it is."""
    assert make(tmp_path / "missing").find_resume_point(log=lambda _: None) is None
    (tmp_path / "empty").mkdir()
    assert make(tmp_path / "empty").find_resume_point(log=lambda _: None) is None
    assert (tmp_path / "empty").is_dir() and not (tmp_path / "missing").exists()


def test_fingerprint_mismatch_starts_fresh_and_moves_old_run_aside(tmp_path):
    """Checkpoints of another run are never resumed nor deleted: the folder is renamed and the log says why."""
    old = make(tmp_path / "ckpts", fingerprint="fp-old")
    save(old, 2)
    save(old, 4)
    messages: list[str] = []
    point = make(tmp_path / "ckpts", fingerprint="fp-new").find_resume_point(log=messages.append)
    assert point is None
    assert not (tmp_path / "ckpts").exists()
    [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("ckpts.superseded-")]
    assert aside.name == "ckpts.superseded-fp-old"  # named by the old run's fingerprint
    assert sorted(p.name for p in aside.iterdir()) == ["step_2", "step_4"]
    assert (aside / "step_4" / "policy" / "model.safetensors").exists()
    assert "fp-old" in messages[0] and "fp-new" in messages[0] and "starting fresh" in messages[0]
    assert str(aside) in messages[0]


def test_the_old_runs_metrics_move_aside_with_its_checkpoints(tmp_path):
    """Nothing of a superseded run is lost: its metrics log goes into the same folder as its checkpoints."""
    save(make(tmp_path / "ckpts", fingerprint="fp-old"), 2)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 0}\n{"step": 1}\n{"step": 2}\n')
    assert (
        make(tmp_path / "ckpts", fingerprint="fp-new").find_resume_point(log=lambda _: None, companions=(metrics,))
        is None
    )
    aside = tmp_path / "ckpts.superseded-fp-old"
    assert (aside / "metrics.jsonl").read_text().count("step") == 3 and not metrics.exists()


def test_the_same_old_run_superseded_twice_keeps_both_folders(tmp_path):
    """Moving aside never overwrites an earlier superseded folder (names are made unique)."""
    for fingerprint in ("fp-1", "fp-1"):
        save(make(tmp_path / "ckpts", fingerprint=fingerprint), 2)
        assert make(tmp_path / "ckpts", fingerprint="fp-3").find_resume_point(log=lambda _: None) is None
    asides = sorted(p for p in tmp_path.iterdir() if p.name.startswith("ckpts.superseded-"))
    assert [p.name for p in asides] == ["ckpts.superseded-fp-1", "ckpts.superseded-fp-1-1"]


def test_keep_top_k_keeps_best_by_metric_and_the_latest(tmp_path):
    """keep_top_k=2, higher is better: metrics 1:.1 2:.9 3:.5 4:.7 5:.2 → keep 2 (.9), 4 (.7) and 5 (latest)."""
    ckpts = make(tmp_path / "ckpts", keep_top_k=2)
    for step, metric in zip(range(1, 6), (0.1, 0.9, 0.5, 0.7, 0.2)):
        save(ckpts, step, metric)
    assert ckpts.steps() == [2, 4, 5]


def test_keep_top_k_lower_is_better(tmp_path):
    """higher_is_better=False ranks by the smallest metric: losses 1:3 2:1 3:2 4:5 → keep 2, 3 and 4 (latest)."""
    ckpts = make(tmp_path / "ckpts", keep_top_k=2, metric_name="train:loss", higher_is_better=False)
    for step, metric in zip(range(1, 5), (3.0, 1.0, 2.0, 5.0)):
        save(ckpts, step, metric)
    assert ckpts.steps() == [2, 3, 4]


def test_keep_top_k_ties_and_missing_metric(tmp_path):
    """Equal metrics: the newer step wins; a step without the metric ranks last (but the latest is kept)."""
    ckpts = make(tmp_path / "ckpts", keep_top_k=1)
    save(ckpts, 1, 0.5)
    save(ckpts, 2, 0.5)
    assert ckpts.steps() == [2]
    save(ckpts, 3)  # no metric (e.g. no validation this step): kept only as the latest
    assert ckpts.steps() == [2, 3]
    save(ckpts, 4, 0.4)
    assert ckpts.steps() == [2, 4]


def test_keep_top_k_ranks_only_save_period_steps(tmp_path):
    """save_period=2: a final off-period step (5) is kept while latest but never ranked against 2 and 4."""
    ckpts = make(tmp_path / "ckpts", keep_top_k=1, save_period=2)
    save(ckpts, 2, 0.3)
    save(ckpts, 4, 0.6)
    save(ckpts, 5, 0.99)
    assert ckpts.steps() == [4, 5]
    save(ckpts, 6, 0.1)
    assert ckpts.steps() == [4, 6]


def test_without_keep_top_k_nothing_is_pruned(tmp_path):
    """keep_top_k=None keeps every step."""
    ckpts = make(tmp_path / "ckpts", keep_top_k=None)
    for step in range(1, 5):
        save(ckpts, step, 0.1 * step)
    assert ckpts.steps() == [1, 2, 3, 4]


def test_save_optimizer_false_writes_weights_only(tmp_path):
    """checkpointing.save_optimizer=false: no optimizer.pt, and load returns None for it."""
    ckpts = make(tmp_path / "ckpts", save_optimizer=False)
    save(ckpts, 1)
    point = ckpts.find_resume_point(log=lambda _: None)
    model, optimizer = StepCheckpoints.load(point)
    assert optimizer is None and not (point.path / "policy" / "optimizer.pt").exists()
    torch.testing.assert_close(model["w"], MODEL["w"] + 1, rtol=0, atol=0)


def test_resaving_a_step_replaces_it(tmp_path):
    """Saving step N twice (e.g. early stop right after a periodic save) leaves one step_N with the new weights."""
    ckpts = make(tmp_path / "ckpts")
    save(ckpts, 2)
    ckpts.save(2, model_state={"w": torch.zeros(1)}, optimizer_state=None, info={"consumed_prompts": 0})
    point = ckpts.find_resume_point(log=lambda _: None)
    torch.testing.assert_close(StepCheckpoints.load(point)[0]["w"], torch.zeros(1), rtol=0, atol=0)
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["step_2"]


CFG = {
    "grpo": {"seed": 42, "max_num_steps": 6, "val_period": 2, "val_at_end": True, "val_at_start": True},
    "loss_fn": {"ratio_clip_max": 0.28},
    "policy": {"train_global_batch_size": 64},
    "data": {"shuffle": True},
    "env": {},
    "cluster": {"num_nodes": 1},
    "checkpointing": {"keep_top_k": 3, "save_period": 2},
    "logger": {"tensorboard_enabled": True},
}
INPUTS = {"train": "t", "val": "v", "policy": "p"}


def _with(section: str, key: str, value) -> dict:
    cfg = json.loads(json.dumps(CFG))
    cfg[section][key] = value
    return cfg


@pytest.mark.parametrize(
    "section,key,value",
    [
        ("grpo", "max_num_steps", 60),
        ("grpo", "val_period", 10),
        ("grpo", "val_at_end", False),
        ("grpo", "val_at_start", False),
        ("checkpointing", "keep_top_k", 1),
        ("checkpointing", "save_period", 5),
        ("logger", "tensorboard_enabled", False),
    ],
)
def test_fingerprint_ignores_keys_that_do_not_change_training(section, key, value):
    """Extending the run, changing validation cadence, retention or logging keeps the fingerprint."""
    assert run_fingerprint(_with(section, key, value), INPUTS) == run_fingerprint(CFG, INPUTS)


@pytest.mark.parametrize(
    "section,key,value",
    [
        ("grpo", "seed", 43),
        ("loss_fn", "ratio_clip_max", 0.2),
        ("policy", "train_global_batch_size", 32),
        ("data", "shuffle", False),
        ("cluster", "num_nodes", 2),
    ],
)
def test_fingerprint_changes_with_training_defining_keys(section, key, value):
    """Seed, loss, policy, data and cluster settings all define the run."""
    assert run_fingerprint(_with(section, key, value), INPUTS) != run_fingerprint(CFG, INPUTS)


def test_fingerprint_changes_with_inputs_and_leaves_config_alone():
    """Different data/policy digests change the fingerprint; the config passed in is not modified."""
    before = json.dumps(CFG, sort_keys=True)
    assert run_fingerprint(CFG, {**INPUTS, "train": "t2"}) != run_fingerprint(CFG, INPUTS)
    assert run_fingerprint(CFG, {**INPUTS, "policy": "p2"}) != run_fingerprint(CFG, INPUTS)
    assert json.dumps(CFG, sort_keys=True) == before


def test_digests_see_names_and_contents(tmp_path):
    """tree_digest changes when a file's content or name changes; file_digest is the sha256 of the bytes."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.bin").write_bytes(b"abc")
    assert file_digest(tmp_path / "a" / "x.bin") == ("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    first = tree_digest(tmp_path / "a")
    (tmp_path / "a" / "x.bin").write_bytes(b"abd")
    second = tree_digest(tmp_path / "a")
    (tmp_path / "a" / "x.bin").rename(tmp_path / "a" / "y.bin")
    assert len({first, second, tree_digest(tmp_path / "a")}) == 3


def damage(path: Path, how: str) -> None:
    if how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_text("")
    elif how == "flip":
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
    else:
        path.unlink()


@pytest.mark.parametrize(
    "target, how, why",
    [
        ("policy/model.safetensors", "truncate", "truncated or overwritten"),
        ("training_info.json", "empty", "truncated or overwritten"),
        ("policy/model.safetensors", "flip", "SHA-256"),
        ("policy/optimizer.pt", "delete", "is missing"),
        ("manifest.json", "empty", "manifest.json is unreadable"),
    ],
)
def test_a_damaged_newest_checkpoint_is_skipped_for_the_newest_intact_one(tmp_path, target, how, why):
    ckpts = make(tmp_path / "ckpts")
    for step in (2, 4, 6):
        save(ckpts, step)
    damage(tmp_path / "ckpts" / "step_6" / target, how)
    messages: list[str] = []
    point = make(tmp_path / "ckpts").find_resume_point(log=messages.append)
    assert point is not None and point.step == 4
    assert len([m for m in messages if "skipping damaged checkpoint" in m]) == 1
    assert "step_6" in messages[0] and why in messages[0]
    assert "resuming from" in messages[1] and "step_4" in messages[1]
    StepCheckpoints.load(point)  # the intact one loads


def test_no_intact_checkpoint_starts_fresh_saying_so(tmp_path):
    ckpts = make(tmp_path / "ckpts")
    save(ckpts, 2)
    damage(tmp_path / "ckpts" / "step_2" / "policy" / "model.safetensors", "truncate")
    messages: list[str] = []
    assert make(tmp_path / "ckpts").find_resume_point(log=messages.append) is None
    assert "skipping damaged" in messages[0] and "no intact checkpoint" in messages[1] and "fresh" in messages[1]


def test_every_saved_file_is_in_the_manifest(tmp_path):
    folder = save(make(tmp_path / "ckpts"), 2)
    files = json.loads((folder / "manifest.json").read_text())["files"]
    on_disk = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert sorted(files) == on_disk and "policy/model.safetensors" in files


def test_a_full_disk_during_a_save_is_an_os_error_naming_the_folder(tmp_path, monkeypatch):
    """torch.save reports a full disk as ``RuntimeError: basic_ios::clear``: it becomes ENOSPC on the step folder
    (one line from the stage) and no half-written step is left."""
    import errno
    import shutil as shutil_module

    ckpts = make(tmp_path / "ckpts")

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0 basic_ios::clear")

    monkeypatch.setattr(step_ckpts.torch, "save", full)
    monkeypatch.setattr(shutil_module, "disk_usage", lambda _p: shutil_module._ntuple_diskusage(10, 10, 0))
    with pytest.raises(OSError) as err:
        save(ckpts, 2)
    assert err.value.errno == errno.ENOSPC and err.value.filename.endswith("tmp_step_2")
    assert not any((tmp_path / "ckpts").iterdir())


def test_tied_embeddings_save_and_load_back_into_the_tied_model(tmp_path):
    """A tied model's state has lm_head.weight and embed_tokens.weight on one storage; safetensors refuses that,
    so the save copies the duplicate. Loading restores the weights and the model stays tied."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=40,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config)
    state = model.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["model.embed_tokens.weight"].data_ptr()
    ckpts = make(tmp_path / "ckpts")
    ckpts.save(1, model_state=state, optimizer_state=None, info={"consumed_prompts": 4, "total_steps": 1})
    loaded, _ = StepCheckpoints.load(ckpts.find_resume_point(log=lambda _: None))
    torch.manual_seed(1)
    fresh = Qwen2ForCausalLM(config)
    fresh.load_state_dict(loaded)
    torch.testing.assert_close(fresh.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert fresh.lm_head.weight.data_ptr() == fresh.model.embed_tokens.weight.data_ptr()
