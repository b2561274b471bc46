"""Supervised fine-tuning of the tiny policy on the CPU, and its accuracy report.

Each training sequence is exactly what the RL stage will see and should produce::

    prompt  = apply_chat_template([user: problem], add_generation_prompt=True)   # "<bos>Q:37+58\\nA:", loss-masked
    target  = expected_answer + EOS                                               # "95<eos>", trained

Loss: token-level cross-entropy averaged over the target tokens of the batch,
``L = -(1/|T|) sum_{(b,t) in T} log p(x[b,t+1] | x[b,<=t])``, T = positions whose next token is a target token.
Optimiser: AdamW, linear warmup to ``lr`` then cosine decay to ``lr * min_lr_ratio``, global-norm clipping.

Reproducibility: the weights depend only on the config (initialisation from ``seed``, batch order from a
``torch.Generator`` seeded with ``seed``, a fixed number of CPU threads), so the same config gives bit-identical
weights on the same machine.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rlvr.utils.omp_wait import set_omp_wait

# Before torch loads (in the tiny_sft stage nothing imports it earlier): the SFT is a loop of small ops on 2 threads,
# where a short spin pays on an idle machine and sleeping at once pays on a busy one (rlvr.utils.omp_wait).
set_omp_wait(spin_when_idle=True)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import PreTrainedTokenizerBase  # noqa: E402

from rlvr.errors import DataError  # noqa: E402
from rlvr.tiny.accuracy import evaluate_accuracy, prompt_ids  # noqa: E402
from rlvr.tiny.config import TinyConfig, TinySftConfig  # noqa: E402
from rlvr.tiny.model import count_parameters, make_tiny_llama  # noqa: E402
from rlvr.tiny.tokenizer import build_char_tokenizer  # noqa: E402
from rlvr.utils.atomic import atomic_dir  # noqa: E402

IGNORE_INDEX = -100
METRICS_FILE = "sft_metrics.json"


def read_math_jsonl(path: str | Path) -> list[dict[str, str]]:
    """Rows ``{"problem": str, "expected_answer": str}`` of a math JSONL file; a bad line is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; write the tiny data first (rlvr.tiny.arith.write_tiny_datasets).")
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg}); write one JSON object per line.") from None
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("problem", "expected_answer")):
            raise DataError(f"{path}:{lineno}: expected an object with string fields 'problem' and 'expected_answer'.")
        rows.append({"problem": row["problem"], "expected_answer": row["expected_answer"]})
    if not rows:
        raise DataError(f"{path}: no rows; the file must hold at least one problem.")
    return rows


def encode_sft_example(tokenizer: PreTrainedTokenizerBase, problem: str, answer: str) -> tuple[list[int], int]:
    """Token ids of prompt + answer + EOS, and the prompt length (the tokens that are not trained)."""
    prompt = prompt_ids(tokenizer, problem)
    target = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt + target, len(prompt)


def pack_examples(examples: list[tuple[list[int], int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids`` ``[N, S]`` and next-token ``labels`` ``[N, S]``.

    ``labels[n, t]`` is the token the model must predict at position t (``input_ids[n, t+1]``), or IGNORE_INDEX
    where that token is part of the prompt or padding; the last column is always IGNORE_INDEX.
    """
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for n, (ids, prompt_len) in enumerate(examples):
        input_ids[n, : len(ids)] = torch.tensor(ids)
        labels[n, prompt_len - 1 : len(ids) - 1] = torch.tensor(ids[prompt_len:])
    return input_ids, labels


def lr_factor(step: int, cfg: TinySftConfig) -> float:
    """Learning-rate multiplier at 0-based ``step``: ``(step+1)/warmup`` in warmup, then cosine to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def sft_loss(
    model: torch.nn.Module, input_ids: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean next-token cross-entropy over the non-ignored ``labels`` ``[B, S]`` (see the module docstring).

    With ``label_smoothing`` = e the target of each token is ``(1 - e)`` on the label plus ``e / V`` on every
    vocabulary entry (``torch.nn.functional.cross_entropy``'s definition).
    """
    # No attention mask needed: padding is on the right, so under the causal mask no real token attends to a
    # pad, and the logits at pad positions are ignored by the labels.
    logits = model(input_ids=input_ids).logits  # [B, S, V]
    return F.cross_entropy(
        logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing
    )


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless stream of index batches ``[batch_size]``: reshuffled epochs, the tail carried into the next."""
    pending = torch.empty(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def _train(model, input_ids, labels, cfg: TinyConfig, log) -> list[dict[str, float]]:
    """Run ``cfg.sft.steps`` AdamW steps; return the loss curve (mean loss per ``log_every`` window)."""
    s = cfg.sft
    optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(cfg.seed)
    lengths = (input_ids != model.config.pad_token_id).sum(dim=1)  # [N]
    curve, window, start = [], [], time.perf_counter()
    model.train()
    for step, idx in zip(range(s.steps), _batches(len(input_ids), s.batch_size, generator)):
        for group in optimizer.param_groups:
            group["lr"] = s.lr * lr_factor(step, s)
        width = int(lengths[idx].max())
        loss = sft_loss(model, input_ids[idx, :width], labels[idx, :width], s.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
        optimizer.step()
        window.append(loss.item())
        if (step + 1) % s.log_every == 0 or step + 1 == s.steps:
            point = {"step": step + 1, "loss": sum(window) / len(window), "lr": optimizer.param_groups[0]["lr"]}
            curve.append(point)
            window = []
            log(
                f"sft step {step + 1}/{s.steps} loss {point['loss']:.4f} lr {point['lr']:.2e} "
                f"elapsed {time.perf_counter() - start:.1f}s"
            )
    return curve


def _evaluate(model, tokenizer, sft_val, rl_val, cfg: TinyConfig) -> dict[str, float]:
    """Greedy accuracy on sft_val and rl_val, sampled accuracy (eval_temperature) on rl_val."""
    s = cfg.sft
    return {
        "sft_val_greedy_accuracy": evaluate_accuracy(model, tokenizer, sft_val, max_new_tokens=s.max_new_tokens),
        "rl_val_greedy_accuracy": evaluate_accuracy(model, tokenizer, rl_val, max_new_tokens=s.max_new_tokens),
        "rl_val_sampled_accuracy": evaluate_accuracy(
            model,
            tokenizer,
            rl_val,
            samples_per_prompt=s.eval_samples_per_prompt,
            temperature=s.eval_temperature,
            max_new_tokens=s.max_new_tokens,
            seed=cfg.seed,
        ),
    }


def train_sft_policy(data_dir: str | Path, out_dir: str | Path, cfg: TinyConfig, log=print) -> dict[str, Any]:
    """Train the tiny policy on ``data_dir/sft_train.jsonl``; write an HF folder and ``sft_metrics.json``.

    ``data_dir`` holds the files of :func:`rlvr.tiny.arith.write_tiny_datasets` (sft_train, sft_val, rl_val are
    read). ``out_dir`` receives, atomically: config.json, model.safetensors, generation_config.json, the tokenizer
    files, tiny_config.json (the config used) and sft_metrics.json. Returns the metrics; ``log`` gets progress lines.
    """
    data_dir = Path(data_dir)
    sft_train = read_math_jsonl(data_dir / "sft_train.jsonl")
    sft_val = read_math_jsonl(data_dir / "sft_val.jsonl")
    rl_val = read_math_jsonl(data_dir / "rl_val.jsonl")
    chars = "".join(sorted({c for rows in (sft_train, sft_val, rl_val) for r in rows for c in "".join(r.values())}))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.sft.num_threads)
    try:
        with atomic_dir(out_dir) as tmp:
            tokenizer = build_char_tokenizer(tmp, extra_chars=chars)
            model = make_tiny_llama(cfg, tokenizer)
            input_ids, labels = pack_examples(
                [encode_sft_example(tokenizer, r["problem"], r["expected_answer"]) for r in sft_train],
                tokenizer.pad_token_id,
            )
            log(
                f"sft: {count_parameters(model):,} parameters, vocab {len(tokenizer)}, {len(sft_train)} examples, "
                f"{cfg.sft.steps} steps x {cfg.sft.batch_size}, {cfg.sft.num_threads} threads"
            )
            start = time.perf_counter()
            curve = _train(model, input_ids, labels, cfg, log)
            train_s = time.perf_counter() - start
            accuracy = _evaluate(model, tokenizer, sft_val, rl_val, cfg)
            metrics = {
                **accuracy,
                "sft_val_size": len(sft_val),
                "rl_val_size": len(rl_val),
                "rl_val_samples_per_prompt": cfg.sft.eval_samples_per_prompt,
                "eval_temperature": cfg.sft.eval_temperature,
                "num_parameters": count_parameters(model),
                "vocab_size": len(tokenizer),
                "train_examples": len(sft_train),
                "steps": cfg.sft.steps,
                "final_loss": curve[-1]["loss"],
                "loss_curve": curve,
                "train_time_s": round(train_s, 2),
                "eval_time_s": round(time.perf_counter() - start - train_s, 2),
                "num_threads": cfg.sft.num_threads,
                "seed": cfg.seed,
            }
            model.save_pretrained(tmp)
            (tmp / "tiny_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
            (tmp / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    finally:
        torch.set_num_threads(previous_threads)
    log(
        f"sft: greedy accuracy sft_val {metrics['sft_val_greedy_accuracy']:.3f}, rl_val "
        f"{metrics['rl_val_greedy_accuracy']:.3f}; sampled (T={cfg.sft.eval_temperature}, "
        f"{cfg.sft.eval_samples_per_prompt}/prompt) rl_val {metrics['rl_val_sampled_accuracy']:.3f}; "
        f"train {train_s:.1f}s"
    )
    return metrics
