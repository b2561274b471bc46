"""Tests of rlvr.tiny.sft: masking, schedule, and a short end-to-end SFT run that is loadable and reproducible."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlvr.errors import DataError
from rlvr.tiny.arith import write_tiny_datasets
from rlvr.tiny.config import TinyConfig, TinySftConfig
from rlvr.tiny.sft import (
    IGNORE_INDEX,
    encode_sft_example,
    lr_factor,
    pack_examples,
    read_math_jsonl,
    sft_loss,
    train_sft_policy,
)
from rlvr.tiny.tokenizer import build_char_tokenizer

SHORT = {
    "data": {
        "sft": {"train_size": 200, "val_size": 12},
        "rl": {"train_size": 16, "val_size": 6},
    },
    "sft": {"steps": 12, "batch_size": 16, "warmup_steps": 2, "log_every": 5, "eval_samples_per_prompt": 2},
}


def test_encode_matches_templated_conversation(tmp_path):
    """Prompt + answer + EOS equals the tokenised chat template of the user/assistant pair; prompt length is exact."""
    tok = build_char_tokenizer(tmp_path)
    ids, prompt_len = encode_sft_example(tok, "23-45", "-22")
    conv = [{"role": "user", "content": "23-45"}, {"role": "assistant", "content": "-22"}]
    assert ids == tok(tok.apply_chat_template(conv, tokenize=False))["input_ids"]
    assert prompt_len == len("<bos>Q:23-45\nA:") - len("<bos>") + 1
    assert tok.decode(ids[prompt_len:]) == "-22<eos>"


def test_pack_examples_masks_prompt_and_padding():
    """labels[t] = input_ids[t+1] on answer/EOS targets only; prompt targets, padding and the last column ignored."""
    input_ids, labels = pack_examples([([2, 10, 11, 20, 3], 3), ([2, 10, 21, 3], 3)], pad_id=0)
    torch.testing.assert_close(input_ids, torch.tensor([[2, 10, 11, 20, 3], [2, 10, 21, 3, 0]]))
    x = IGNORE_INDEX
    torch.testing.assert_close(labels, torch.tensor([[x, x, 20, 3, x], [x, x, 3, x, x]]))


class _FixedLogits(torch.nn.Module):
    """A stand-in model whose logits are given (sft_loss only reads ``.logits``)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, input_ids):
        return SimpleNamespace(logits=self.logits)


def test_sft_loss_label_smoothing_hand_values():
    """Smoothing e: per target token -(1-e) log p[label] - (e/V) sum_v log p[v], averaged over non-ignored
    targets; e = 0 is plain cross-entropy."""
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, 1.0, 1.0]]])  # [1, 3, V=3]
    labels = torch.tensor([[0, 2, IGNORE_INDEX]])
    logp = torch.log_softmax(logits, dim=-1)[0]
    plain = -(logp[0, 0] + logp[1, 2]) / 2
    e = 0.3
    smoothed = sum(-(1 - e) * logp[t, labels[0, t]] - e / 3 * logp[t].sum() for t in range(2)) / 2
    model = _FixedLogits(logits)
    torch.testing.assert_close(sft_loss(model, torch.zeros(1, 3, dtype=torch.long), labels), plain)
    torch.testing.assert_close(sft_loss(model, torch.zeros(1, 3, dtype=torch.long), labels, e), smoothed)


def test_lr_schedule_hand_values():
    """Linear warmup (step+1)/warmup, then cosine from 1 to min_lr_ratio at the last step's end."""
    cfg = TinySftConfig(steps=10, warmup_steps=2, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == 0.5 and lr_factor(1, cfg) == 1.0
    assert lr_factor(2, cfg) == pytest.approx(1.0)
    assert lr_factor(6, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))  # = 0.55
    assert lr_factor(10, cfg) == pytest.approx(0.1)


def test_read_math_jsonl_errors_name_file_and_line(tmp_path):
    """A bad line is a DataError with path:line; a missing file says how to make it."""
    path = tmp_path / "x.jsonl"
    path.write_text('{"problem": "1+1", "expected_answer": "2"}\n{"problem": "1+2"}\n')
    with pytest.raises(DataError, match=r"x\.jsonl:2: expected an object"):
        read_math_jsonl(path)
    path.write_text('{"problem": "1+1", "expected_answer": "2"}\nnot json\n')
    with pytest.raises(DataError, match=r"x\.jsonl:2: not valid JSON"):
        read_math_jsonl(path)
    with pytest.raises(DataError, match="write_tiny_datasets"):
        read_math_jsonl(tmp_path / "missing.jsonl")


@pytest.fixture(scope="module")
def short_runs(tmp_path_factory):
    """Two short SFT runs of the same config on the same data (a few steps each)."""
    root = tmp_path_factory.mktemp("sft")
    cfg = TinyConfig.from_dict(SHORT)
    write_tiny_datasets(root / "data", cfg)
    lines: list[str] = []
    first = train_sft_policy(root / "data", root / "a", cfg, log=lines.append)
    second = train_sft_policy(root / "data", root / "b", cfg, log=lambda _: None)
    return root, cfg, first, second, lines


def test_short_run_writes_a_loadable_hf_folder(short_runs):
    """The output folder loads with AutoModelForCausalLM + AutoTokenizer and answers a templated prompt."""
    root, _, metrics, _, _ = short_runs
    out = root / "a"
    for name in (
        "config.json",
        "model.safetensors",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "sft_metrics.json",
        "tiny_config.json",
    ):
        assert (out / name).is_file(), name
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "12+34"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    gen = model.generate(**ids, do_sample=False, max_new_tokens=4)
    assert gen.shape[1] > ids["input_ids"].shape[1]
    assert json.loads((out / "sft_metrics.json").read_text()) == metrics
    assert TinyConfig.from_dict(json.loads((out / "tiny_config.json").read_text())) == short_runs[1]


def test_short_run_metrics_and_log(short_runs):
    """Metrics hold the accuracies in [0, 1], a loss curve at log_every steps that falls, and progress was logged."""
    _, cfg, metrics, _, lines = short_runs
    for key in ("sft_val_greedy_accuracy", "rl_val_greedy_accuracy", "rl_val_sampled_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert [p["step"] for p in metrics["loss_curve"]] == [5, 10, 12]
    assert metrics["loss_curve"][-1]["loss"] < metrics["loss_curve"][0]["loss"]
    assert metrics["sft_val_size"] == 12 and metrics["rl_val_size"] == 6 and metrics["train_examples"] == 200
    assert any(line.startswith("sft step 5/12 loss") for line in lines)
    assert "sampled" in lines[-1]


def test_same_config_same_weights(short_runs):
    """Two runs of the same config give bit-identical weights and identical metrics (timings aside)."""
    root, _, first, second, _ = short_runs
    a, b = load_file(root / "a" / "model.safetensors"), load_file(root / "b" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    untimed = lambda m: {k: v for k, v in m.items() if not k.endswith("_time_s")}  # noqa: E731
    assert untimed(first) == untimed(second)


def test_failed_run_leaves_no_output(tmp_path):
    """A run that fails (missing data) creates no output folder."""
    with pytest.raises(DataError):
        train_sft_policy(tmp_path / "nodata", tmp_path / "out", TinyConfig.from_dict(SHORT))
    assert not (tmp_path / "out").exists()
