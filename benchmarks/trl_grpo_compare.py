"""Seconds per GRPO step: this engine's ``rlvr`` stage against TRL's ``GRPOTrainer``, same policy, prompts, shapes.

Both train the tiny SFT policy on the tiny RL prompts (``rl_prep/train.jsonl``, already chat-templated) for
``--steps`` steps with the benchmark shapes (``grpo_step_bench.BENCH_SHAPES``): 8 prompts × 8 generations = 64
completions per step, at most 8 new tokens, temperature 1, one optimizer step per GRPO step over micro-batches of
32, AdamW lr 3e-5, clip
ε = 0.2 / 0.28, no KL term, token-level loss, and no previous-policy log-prob pass (ours:
``force_on_policy_ratio``; TRL skips it when a generation batch feeds exactly one optimizer step). The reward is
our math verifier (:class:`rlvr.rewards.scorer.RewardScorer`, 2 worker processes, as ``env.math.num_workers``)
in both. Known differences, none of which changes the work per step: our baseline is leave-one-out (TRL: group
mean), TRL generates with ``model.generate`` (ours: our own KV-cache sampling loop), and dropout is off in both.

Per-step time: ours is ``timing/train/total_step_time`` from ``metrics.jsonl``; TRL's is on_step_begin →
on_step_end of a trainer callback (generation, scoring, loss and optimizer step all happen in between). Both
exclude start-up, validation and checkpointing; averages leave out the first ``--warmup`` steps. Rounds alternate
the two engines, each with one torch thread by default (``--threads``; see grpo_step_bench.py for why).

    PYTHONPATH=src python benchmarks/trl_grpo_compare.py --tiny-run results/tiny [--steps 10] [--warmup 2] [--rounds 2]

``--tiny-run`` is a folder of ``nemotron steps run rl/nemo_rl/rlvr -c tiny`` (``tiny_sft/policy``, ``rl_prep``
and ``hf_to_megatron/checkpoint_megatron``; ``--until rl_prep`` is enough). Needs ``pip install trl`` (tested
with trl 1.16.0 on torch 2.13.0+cpu, transformers 5.24.0).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grpo_step_bench import BENCH_OVERRIDES, REPO, run_rlvr  # noqa: E402

sys.path.insert(0, str(REPO / "src"))


def ours(tiny_run: Path, workdir: Path, steps: int) -> tuple[list[float], list[dict[str, float]]]:
    """Per-step seconds and (generated tokens per sample, reward, grad norm) of the rlvr stage."""
    metrics, _ = run_rlvr(tiny_run, workdir / "ours", [*BENCH_OVERRIDES, f"grpo.max_num_steps={steps}"])
    steps_m = [m for m in metrics if "timing/train/total_step_time" in m]
    work = [
        {
            "tokens": m["train/mean_gen_tokens_per_sample"],
            "reward": m["train/raw_reward"],
            "grad_norm": m["train/grad_norm"],
        }
        for m in steps_m
    ]
    return [m["timing/train/total_step_time"] for m in steps_m], work


def trl_run(tiny_run: Path, workdir: Path, steps: int, seed: int) -> tuple[list[float], list[dict[str, float]], float]:
    """TRL GRPOTrainer for ``steps`` steps: per-step seconds, work per step (as :func:`ours`), reward seconds."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rlvr.rewards.scorer import RewardScorer

    rows = [json.loads(line) for line in (tiny_run / "rl_prep" / "train.jsonl").read_text().splitlines()]
    dataset = Dataset.from_list(
        [{"prompt": r["prompt"], "ground_truth": r["ground_truth"], "task_name": r["task_name"]} for r in rows]
    )
    policy = tiny_run / "tiny_sft" / "policy"
    tokenizer = AutoTokenizer.from_pretrained(str(policy))
    model = AutoModelForCausalLM.from_pretrained(str(policy), dtype=torch.float32)
    scorer = RewardScorer(num_workers=2, timeout_s=10.0)
    reward_seconds = [0.0]

    def rlvr_math_verify(prompts, completions, ground_truth, task_name, **kwargs):
        started = time.perf_counter()
        result = scorer.score_batch(
            task_name, completions, [{"task_name": t, "ground_truth": g} for t, g in zip(task_name, ground_truth)]
        )
        reward_seconds[0] += time.perf_counter() - started
        return result.rewards

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds.append(time.perf_counter() - self._start)

    config = GRPOConfig(
        output_dir=str(workdir / "trl"),
        max_steps=steps,
        seed=seed,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_dropout=True,
        dataloader_num_workers=0,
        per_device_train_batch_size=32,
        gradient_accumulation_steps=2,
        num_generations=8,
        max_completion_length=8,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=3e-5,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=0.0,
        epsilon=0.2,
        epsilon_high=0.28,
        loss_type="dapo",
        scale_rewards="group",
        num_iterations=1,
    )
    timer = StepTimer()
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=rlvr_math_verify,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer],
    )
    try:
        trainer.train()
    finally:
        scorer.close()
    work = [
        {
            "tokens": float(h["completions/mean_length"]),
            "reward": float(h["reward"]),
            "grad_norm": float(h["grad_norm"]),
        }
        for h in trainer.state.log_history
        if "reward" in h
    ]
    return timer.seconds, work, reward_seconds[0]


def stats(runs: list[list[float]], warmup: int) -> dict[str, float]:
    """Median, minimum, mean and std of the per-step seconds of all runs, each without its first ``warmup`` steps."""
    kept = [s for run in runs for s in run[warmup:]]
    if len(kept) < 2:
        raise SystemExit(f"only {len(kept)} steps after a warm-up of {warmup}: raise --steps")
    return {
        "median": statistics.median(kept),
        "min": min(kept),
        "mean": statistics.fmean(kept),
        "std": statistics.stdev(kept),
        "steps": len(kept),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-run", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="ours, TRL, ours, TRL, ... (load drifts alike)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS), both engines")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported here or in the stage process
    tiny_run = args.tiny_run.resolve()
    ours_runs, trl_runs, work, trl_reward = [], [], {"ours": [], "trl": []}, 0.0
    with tempfile.TemporaryDirectory(prefix="trl_grpo_compare-") as tmp:
        for r in range(args.rounds):
            seconds, ours_work = ours(tiny_run, Path(tmp) / f"round{r}", args.steps)
            ours_runs.append(seconds)
            work["ours"] += ours_work
            seconds, trl_work, reward = trl_run(tiny_run, Path(tmp) / f"round{r}", args.steps, args.seed)
            trl_runs.append(seconds)
            work["trl"] += trl_work
            trl_reward += reward
    import trl

    load = os.getloadavg()[0]
    print(
        f"\n{args.rounds} × {args.steps} steps each; seconds per step over steps {args.warmup + 1}..{args.steps} "
        f"of every run ({args.threads} torch thread(s); load average {load:.1f} on {os.cpu_count()} CPUs)"
    )
    print("| engine | median s/step | fastest step | mean ± std | steps timed |\n|---|---:|---:|---:|---:|")
    for name, runs in (("rlvr (this repo)", ours_runs), (f"TRL {trl.__version__} GRPOTrainer", trl_runs)):
        s = stats(runs, args.warmup)
        print(f"| {name} | {s['median']:.3f} | {s['min']:.3f} | {s['mean']:.3f} ± {s['std']:.3f} | {s['steps']} |")
    for name in ("ours", "trl"):  # the same work per step: response lengths and rewards of the two runs
        w = work[name]
        print(
            f"{name}: mean generated tokens/sample {statistics.fmean(x['tokens'] for x in w):.2f}, "
            f"mean reward {statistics.fmean(x['reward'] for x in w):.3f}, "
            f"steps with grad_norm > 0: {sum(x['grad_norm'] > 0 for x in w)}/{len(w)}"
        )
    print(f"TRL: {trl_reward / sum(map(len, trl_runs)):.3f} s/step in the reward function (math verifier)")
    print("per-step seconds, ours:", [[round(x, 3) for x in run] for run in ours_runs])
    print("per-step seconds, TRL: ", [[round(x, 3) for x in run] for run in trl_runs])


if __name__ == "__main__":
    main()
