"""Trainable parameters, peak memory and time of a LoRA GRPO step against a full-weight step, same model.

The model is a random Llama of about 20M parameters (hidden 512, 6 layers, GQA 8/4 heads, SwiGLU 1,408, vocab
8,000, tied embeddings), float32 on the CPU. Each mode runs in a fresh process, set up as the ``rlvr`` stage sets
up a run (:class:`rlvr.grpo.roles.PolicyWorkers` logic): ``HFPolicy.from_config`` with or without
``policy.dtensor_cfg.lora_cfg`` (NeMo-RL's defaults: all linear layers, rank 8, alpha 32), and the HF sampler
(LoRA: a plain copy of the base refitted with the merged weights before each generation, as the stage does;
full: the policy's own model). A GRPO step is: generate 8 prompts × 8 samples of up to 16 new tokens at
temperature 1 → a synthetic verifiable reward (1 when the first sampled token is even) → previous-policy log-probs
→ leave-one-out advantages → ``ClippedPGLoss`` → one AdamW step over micro-batches of ``--micro-batch`` rows
(default 4: activations then stay small next to the weights, gradients and AdamW moments that LoRA saves).

Reported per mode: trainable parameters, the process's peak RSS (``ru_maxrss``) after ``--steps`` steps, the RSS
once the model, optimizer and sampler are built (before the first step), the growth between the two (what the
steps themselves add: gradients, AdamW moments, activations), and the median step time.

    PYTHONPATH=src python benchmarks/lora_bench.py [--steps 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

MODEL = dict(
    vocab_size=8000,
    hidden_size=512,
    intermediate_size=1408,
    num_hidden_layers=6,
    num_attention_heads=8,
    num_key_value_heads=4,
    max_position_embeddings=256,
    tie_word_embeddings=True,
)
LORA = {
    "enabled": True,
    "target_modules": [],
    "exclude_modules": [],
    "match_all_linear": True,
    "dim": 8,
    "alpha": 32,
    "dropout": 0.0,
    "dropout_position": "post",
    "lora_A_init": "xavier",
    "use_triton": True,
}
PROMPTS, SAMPLES, PROMPT_LEN, NEW_TOKENS = 8, 8, 48, 16


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Tokenizer:
    """What the sampler needs of a tokenizer: ids only (the reward reads token ids, not text)."""

    eos_token_id, pad_token_id = 1, 0

    def decode(self, token_ids, skip_special_tokens=True):
        return " ".join(map(str, token_ids))


def run_mode(mode: str, steps: int, micro_batch: int) -> dict:
    """One mode in this process; returns its figures."""
    import copy

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlvr.generation import GenerationConfig
    from rlvr.generation.hf import HFGenerationBackend
    from rlvr.grpo.advantages import compute_advantages
    from rlvr.grpo.loss import ClippedPGLoss
    from rlvr.grpo.rollout import to_train_tensors
    from rlvr.policy.hf import HFPolicy

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**MODEL, pad_token_id=0, eos_token_id=1, bos_token_id=2)).eval()
    total = sum(p.numel() for p in model.parameters())
    cfg = {
        "optimizer": {"name": "torch.optim.AdamW", "kwargs": {"lr": 1e-5}},
        "scheduler": None,
        "max_grad_norm": 1.0,
        "generation": {"temperature": 1.0},
        "dtensor_cfg": {"enabled": True, "lora_cfg": LORA if mode == "lora" else {"enabled": False}},
    }
    generation_model = copy.deepcopy(model) if mode == "lora" else None  # taken before LoRA wraps model
    policy = HFPolicy.from_config(cfg, model=model)
    sampler = HFGenerationBackend(generation_model if mode == "lora" else policy.model, _Tokenizer())
    trainable = sum(p.numel() for p in policy.model.parameters() if p.requires_grad)
    loss_fn = ClippedPGLoss({"reference_policy_kl_penalty": 0.0})
    generation = GenerationConfig(max_new_tokens=NEW_TOKENS, temperature=1.0)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, MODEL["vocab_size"], (PROMPT_LEN,), generator=g).tolist() for _ in range(PROMPTS)]
    ids = [p for p in prompts for _ in range(SAMPLES)]
    built_rss, times = _rss_mib(), []
    for step in range(steps):
        start = time.perf_counter()
        if mode == "lora":
            sampler.update_weights(policy.model_state())
        outputs = sampler.generate(ids, generation, seed=step)
        rewards = torch.tensor([float(o.token_ids[0] % 2 == 0) for o in outputs])
        batch = to_train_tensors(ids, outputs, pad_id=0)
        batch["sample_mask"] = torch.ones(len(ids))
        batch["prev_logprobs"] = policy.get_logprobs(
            batch["input_ids"], batch["attention_mask"], micro_batch_size=micro_batch
        )
        batch["reference_policy_logprobs"] = batch["prev_logprobs"]
        adv = compute_advantages(rewards, torch.arange(PROMPTS).repeat_interleave(SAMPLES))
        batch["advantages"] = adv[:, None] * batch["token_mask"]
        policy.train(batch, loss_fn, global_batch_size=len(ids), micro_batch_size=micro_batch)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": mode,
        "total_params": total,
        "trainable_params": trainable,
        "built_rss_mib": round(built_rss, 1),
        "peak_rss_mib": round(peak, 1),
        "step_growth_mib": round(peak - built_rss, 1),
        "median_step_s": round(statistics.median(times), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--micro-batch", type=int, default=4, help="rows per forward/backward (activation memory)")
    parser.add_argument("--mode", choices=["lora", "full"], help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.mode:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_mode(args.mode, args.steps, args.micro_batch)))
        return
    rows = []
    for mode in ("full", "lora"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--mode",
                mode,
                "--steps",
                str(args.steps),
                "--threads",
                str(args.threads),
                "--micro-batch",
                str(args.micro_batch),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("| | full | LoRA (rank 8, all linear) |\n|---|---:|---:|")
    full, lora = rows
    print(f"| parameters | {full['total_params']:,} | {lora['total_params']:,} |")
    print(
        f"| trainable parameters | {full['trainable_params']:,} | {lora['trainable_params']:,} "
        f"({100 * lora['trainable_params'] / lora['total_params']:.2f}%) |"
    )
    for key, label in (
        ("built_rss_mib", "RSS before the first step (MiB)"),
        ("peak_rss_mib", "peak RSS (MiB)"),
        ("step_growth_mib", "peak - RSS before the step (MiB)"),
        ("median_step_s", "median step time (s)"),
    ):
        print(f"| {label} | {full[key]} | {lora[key]} |")


if __name__ == "__main__":
    main()
