"""Peak memory of the policy's log-prob + loss pass at a 150k-token vocabulary, chunked vs not.

What is measured: one ``HFPolicy.train`` call (forward, fp32 log-softmax, a GRPO-style policy-gradient loss,
backward, one SGD step at lr 0) and one ``HFPolicy.get_logprobs`` call on a small Qwen2-shaped model (tied
embeddings, hidden 256, 2 layers, vocabulary 151,936 as Qwen2/Qwen2.5) for ``B`` rows of ``S`` tokens, once per
``policy.logprob_chunk_size`` value (``none`` = the unchunked path). At this shape the output layer dominates:
a full ``[B, S, V]`` fp32 logits tensor is ``B·S·V·4`` bytes.

Each setting runs in its own process. On CPU the peak is the resident-set high-water mark (``VmHWM``), reset
just before the pass through ``/proc/self/clear_refs`` and reported minus the resident set at that moment, so
it counts what the pass itself allocates (activations, logits, gradients) and not the model or the libraries.
On a GPU (``--device cuda``) it is ``torch.cuda.max_memory_allocated`` minus the allocation before the pass.

    PYTHONPATH=src python benchmarks/logprob_memory_bench.py [--rows 2] [--seq 512] [--chunks none,512,128,32]
        [--precision float32|bfloat16] [--device cpu|cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

VOCAB = 151_936


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def build_policy(args: argparse.Namespace, chunk: int | None):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlvr.policy.hf import HFPolicy

    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args.precision]
    model = Qwen2ForCausalLM(config).to(dtype=dtype, device=args.device).eval()
    return HFPolicy(
        model, optimizer={"name": "torch.optim.SGD", "kwargs": {"lr": 0.0}}, temperature=1.0, logprob_chunk_size=chunk
    )


def make_batch(args: argparse.Namespace):
    import torch

    g = torch.Generator().manual_seed(0)
    rows, seq = args.rows, args.seq
    token_mask = torch.zeros(rows, seq)
    token_mask[:, seq // 4 :] = 1  # the response: the last three quarters
    return {
        "input_ids": torch.randint(0, VOCAB, (rows, seq), generator=g),
        "attention_mask": torch.ones(rows, seq, dtype=torch.long),
        "token_mask": token_mask,
        "sample_mask": torch.ones(rows),
        "advantages": torch.randn(rows, 1, generator=g).expand(rows, seq),
    }


def pg_loss(lp, data, global_valid_seqs, global_valid_toks):
    mask = (data["token_mask"] * data["sample_mask"][:, None])[:, 1:]
    return -(data["advantages"][:, 1:] * lp[:, 1:] * mask).sum() / global_valid_toks, {}


def measure(args: argparse.Namespace, chunk: int | None) -> dict:
    """Peak extra memory (MiB) and time of one train pass and one log-prob pass; runs in a child process."""
    import torch

    torch.set_num_threads(args.threads)
    policy = build_policy(args, chunk)
    batch = make_batch(args)
    passes = {
        "train": lambda: policy.train(batch, pg_loss, global_batch_size=args.rows, micro_batch_size=args.rows),
        "logprobs": lambda: policy.get_logprobs(
            batch["input_ids"], batch["attention_mask"], micro_batch_size=args.rows
        ),
    }
    out = {"chunk": chunk}
    for name, run in passes.items():
        for p in policy.model.parameters():
            p.grad = None
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current VmRSS
            before = _rss_kb("VmRSS") * 1024
        start = time.perf_counter()
        run()
        if args.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            peak = _rss_kb("VmHWM") * 1024
        out[name] = {"peak_mib": (peak - before) / 2**20, "seconds": time.perf_counter() - start}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--chunks", default="none,512,128,32", help="comma list; none = unchunked")
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args, None if args.child == "none" else int(args.child))))
        return
    logits_mib = args.rows * args.seq * VOCAB * 4 / 2**20
    print(
        f"B={args.rows} S={args.seq} V={VOCAB} {args.precision} on {args.device}: one fp32 [B, S, V] logits "
        f"tensor = {logits_mib:,.0f} MiB"
    )
    print("| logprob_chunk_size | train pass peak (MiB) | train s | log-prob pass peak (MiB) | log-prob s |")
    print("|---|---:|---:|---:|---:|")
    results = []
    for chunk in args.chunks.split(","):
        cmd = [sys.executable, __file__, "--child", chunk, *sys.argv[1:]]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            sys.exit(f"chunk {chunk} failed:\n{done.stderr[-3000:]}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        results.append(row)
        print(
            f"| {chunk} | {row['train']['peak_mib']:,.0f} | {row['train']['seconds']:.1f} | "
            f"{row['logprobs']['peak_mib']:,.0f} | {row['logprobs']['seconds']:.1f} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
