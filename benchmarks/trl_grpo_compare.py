"""Seconds per GRPO step: this engine's ``rlvr`` stage against TRL's ``GRPOTrainer`` at three model sizes.

At every size (``bench_sizes.SIZES``) both engines train the same policy (ours from its ``checkpoint_megatron``,
TRL from the HF folder with bit-identical weights) on the tiny RL prompts (``rl_prep/train.jsonl``, already
chat-templated), with the same shape: prompts × generations per step, at most ``new_tokens`` new tokens,
temperature 1, one optimizer step per GRPO step over micro-batches of ``micro_batch`` rows, AdamW lr 3e-5, clip
ε = 0.2 / 0.28, no KL term, token-level loss, and no previous-policy log-prob pass (ours:
``force_on_policy_ratio``; TRL skips it when a generation batch feeds exactly one optimizer step). The reward is
our math verifier (:class:`rlvr.rewards.scorer.RewardScorer`, 2 worker processes, as ``env.math.num_workers``)
in both. Known differences, none of which changes the work per step: our baseline is leave-one-out (TRL: group
mean), TRL generates with ``model.generate`` (ours: our own KV-cache sampling loop), and dropout is off in both.

| size | policy | new tokens | rollouts (prompts × generations) | micro-batch |
|---|---|---:|---:|---:|
| tiny | the tiny SFT policy, 0.8M parameters | 8 | 8 × 8 | 32 |
| 20M | random Llama, hidden 512, 7 layers | 64 | 4 × 4 | 8 |
| 60M | random Llama, hidden 768, 9 layers | 128 | 2 × 4 | 4 |

Per-step time: ours is ``timing/train/total_step_time`` from ``metrics.jsonl`` (and its phases); TRL's is
on_step_begin → on_step_end of a trainer callback (generation, scoring, loss and optimizer step all happen in
between), with its ``model.generate`` calls and reward function timed apart. Both also report the CPU seconds of
the training process over the step (``time.process_time``; the reward workers are other processes in both):
on a machine shared with other jobs, wall time swings with the load, CPU time much less. Both exclude
start-up, validation and checkpointing; statistics leave out the first ``--warmup`` steps of every run. Rounds
alternate the engines (ours, TRL, ours, TRL, ...) so that they share the machine's load drift; every process
gets the same torch thread count (``--threads``, default 1; see grpo_step_bench.py for why) and ``uptime``'s
load is recorded around each run. ``--baseline-src`` adds a third engine, the rlvr stage run from another
checkout's ``src/`` (a before/after comparison in the same rounds).

    PYTHONPATH=src python benchmarks/trl_grpo_compare.py --tiny-run results/tiny \\
        [--sizes tiny 20M 60M] [--rounds 2] [--warmup 1] [--json benchmarks/results/trl_grpo_compare.json]

``--tiny-run`` is a folder of ``nemotron steps run rl/nemo_rl/rlvr -c tiny`` (``tiny_sft/policy``, ``rl_prep``
and ``hf_to_megatron/checkpoint_megatron``; ``--until rl_prep`` is enough). Needs the ``bench`` extra (trl 1.16.0,
tested on torch 2.13.0+cpu, transformers 5.25.0).
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
from bench_sizes import SIZES, Size, build_random_policy, our_overrides  # noqa: E402
from grpo_step_bench import BENCH_FIXED, REPO, run_rlvr  # noqa: E402

sys.path.insert(0, str(REPO / "src"))

OUR_PHASES = {
    "generation": "timing/train/generation",
    "scoring": "timing/train/reward_calculation",
    "log-probs": "timing/train/policy_and_reference_logprobs",
    "training": "timing/train/policy_training",
}


def ours(
    tiny_run: Path, workdir: Path, size: Size, steps: int, policy: Path | None, src: Path | None = None
) -> dict[str, list]:
    """Per-step seconds, phases and work (generated tokens per sample, reward, grad norm) of the rlvr stage
    (running from ``src``, default this checkout's)."""
    overrides = [*BENCH_FIXED, *our_overrides(size), f"grpo.max_num_steps={steps}"]
    metrics, _ = run_rlvr(tiny_run, workdir / "ours", overrides, policy=policy, src=src)
    rows = [m for m in metrics if "timing/train/total_step_time" in m]
    return {
        "seconds": [m["timing/train/total_step_time"] for m in rows],
        "cpu_seconds": [m["timing/train/total_step_cpu_time"] for m in rows],
        "phases": [{name: float(m.get(key) or 0.0) for name, key in OUR_PHASES.items()} for m in rows],
        "work": [
            {
                "tokens": m["train/mean_gen_tokens_per_sample"],
                "reward": m["train/raw_reward"],
                "grad_norm": m["train/grad_norm"],
            }
            for m in rows
        ],
    }


def trl_config(size: Size, workdir: Path, steps: int, seed: int):
    """TRL's ``GRPOConfig`` for ``size``: the shape and objective of our benchmark config (module docstring)."""
    from trl import GRPOConfig

    return GRPOConfig(
        output_dir=str(workdir / "trl"),
        max_steps=steps,
        seed=seed,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_dropout=True,
        dataloader_num_workers=0,
        per_device_train_batch_size=size.micro_batch,
        gradient_accumulation_steps=size.rollouts // size.micro_batch,
        num_generations=size.generations,
        max_completion_length=size.new_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        learning_rate=size.lr,
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


def trl_run(
    tiny_run: Path, workdir: Path, size: Size, steps: int, hf_policy: Path, seed: int, save_to: Path | None = None
) -> dict[str, list]:
    """TRL GRPOTrainer for ``steps`` steps: per-step seconds, phases and work, as :func:`ours`; ``save_to``: also
    save the trained policy there as an HF folder (model and tokenizer)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOTrainer

    from rlvr.rewards.scorer import RewardScorer

    rows = [json.loads(line) for line in (tiny_run / "rl_prep" / "train.jsonl").read_text().splitlines()]
    dataset = Dataset.from_list(
        [{"prompt": r["prompt"], "ground_truth": r["ground_truth"], "task_name": r["task_name"]} for r in rows]
    )
    tokenizer = AutoTokenizer.from_pretrained(str(hf_policy))
    model = AutoModelForCausalLM.from_pretrained(str(hf_policy), dtype=torch.float32)
    scorer = RewardScorer(num_workers=2, timeout_s=10.0)
    spent = {"generation": 0.0, "scoring": 0.0}  # running totals; the callback takes per-step differences

    def rlvr_math_verify(prompts, completions, ground_truth, task_name, **kwargs):
        started = time.perf_counter()
        result = scorer.score_batch(
            task_name, completions, [{"task_name": t, "ground_truth": g} for t, g in zip(task_name, ground_truth)]
        )
        spent["scoring"] += time.perf_counter() - started
        return result.rewards

    generate = model.generate

    def timed_generate(*args, **kwargs):  # TRL calls the (unwrapped, on CPU identical) model's generate
        started = time.perf_counter()
        try:
            return generate(*args, **kwargs)
        finally:
            spent["generation"] += time.perf_counter() - started

    model.generate = timed_generate

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.seconds: list[float] = []
            self.cpu_seconds: list[float] = []
            self.phases: list[dict[str, float]] = []
            self._start, self._cpu, self._spent = 0.0, 0.0, dict(spent)

        def on_step_begin(self, args, state, control, **kwargs):
            self._start, self._cpu, self._spent = time.perf_counter(), time.process_time(), dict(spent)

        def on_step_end(self, args, state, control, **kwargs):
            self.cpu_seconds.append(time.process_time() - self._cpu)
            total = time.perf_counter() - self._start
            phases = {k: spent[k] - self._spent[k] for k in spent}
            phases["training"] = total - sum(phases.values())  # forward, backward, optimizer and TRL's own work
            self.seconds.append(total)
            self.phases.append(phases)

    config = trl_config(size, workdir, steps, seed)
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
    if save_to is not None:
        trainer.model.save_pretrained(save_to)
        tokenizer.save_pretrained(save_to)
    work = [
        {
            "tokens": float(h["completions/mean_length"]),
            "reward": float(h["reward"]),
            "grad_norm": float(h["grad_norm"]),
        }
        for h in trainer.state.log_history
        if "reward" in h
    ]
    return {"seconds": timer.seconds, "cpu_seconds": timer.cpu_seconds, "phases": timer.phases, "work": work}


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max, mean and sample std of ``values``."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def summarize(runs: list[dict[str, list]], warmup: int) -> dict[str, object]:
    """Step-time spread over all runs (each without its first ``warmup`` steps), phase medians, work per step."""
    seconds = [s for run in runs for s in run["seconds"][warmup:]]
    cpu_seconds = [s for run in runs for s in run["cpu_seconds"][warmup:]]
    phases = [p for run in runs for p in run["phases"][warmup:]]
    work = [w for run in runs for w in run["work"]]
    if len(seconds) < 2:
        raise SystemExit(f"only {len(seconds)} steps after a warm-up of {warmup}: raise the steps")
    return {
        "step_s": spread(seconds),
        "step_cpu_s": spread(cpu_seconds),
        "round_medians_s": [statistics.median(run["seconds"][warmup:]) for run in runs],
        "phases_median_s": {k: statistics.median(p[k] for p in phases) for k in phases[0]},
        "tokens_per_sample": statistics.fmean(w["tokens"] for w in work),
        "mean_reward": statistics.fmean(w["reward"] for w in work),
        "steps_with_gradient": f"{sum(w['grad_norm'] > 0 for w in work)}/{len(work)}",
        "per_step_s": [[round(x, 4) for x in run["seconds"]] for run in runs],
    }


def compare_size(size: Size, tiny_run: Path, tmp: Path, args: argparse.Namespace) -> dict[str, object]:
    """Alternating rounds of both engines at ``size``; the summary of each and the ratio of the medians."""
    steps = args.steps or size.steps
    policy = hf_policy = None
    params = None
    if size.model is None:
        hf_policy = tiny_run / "tiny_sft" / "policy"
    else:
        hf_policy, policy, params = build_random_policy(size, tiny_run / "tiny_sft" / "policy", tmp, args.seed)
    engines = ["rlvr", "trl"] + (["rlvr-baseline"] if args.baseline_src else [])
    runs: dict[str, list] = {engine: [] for engine in engines}
    loads = []
    for r in range(args.rounds):
        for engine in engines:
            loads.append(os.getloadavg()[0])
            workdir = tmp / f"{size.name}-{engine}-{r}"
            if engine == "trl":
                runs[engine].append(trl_run(tiny_run, workdir, size, steps, hf_policy, args.seed))
            else:
                src = args.baseline_src if engine == "rlvr-baseline" else None
                runs[engine].append(ours(tiny_run, workdir, size, steps, policy, src))
            print(f"{size.name} round {r} {engine}: {runs[engine][-1]['seconds']}", flush=True)
    loads.append(os.getloadavg()[0])
    result = {name: summarize(engine_runs, args.warmup) for name, engine_runs in runs.items()}
    ratio = result["rlvr"]["step_s"]["median"] / result["trl"]["step_s"]["median"]
    round_ratios = [a / b for a, b in zip(result["rlvr"]["round_medians_s"], result["trl"]["round_medians_s"])]
    cpu_ratio = result["rlvr"]["step_cpu_s"]["median"] / result["trl"]["step_cpu_s"]["median"]
    if args.baseline_src:
        result["baseline_ratio_of_medians"] = (
            result["rlvr-baseline"]["step_s"]["median"] / result["trl"]["step_s"]["median"]
        )
        result["baseline_cpu_ratio_of_medians"] = (
            result["rlvr-baseline"]["step_cpu_s"]["median"] / result["trl"]["step_cpu_s"]["median"]
        )
    return {
        "shape": {**{k: v for k, v in vars(size).items() if k != "model"}, "model": size.model, "parameters": params},
        "steps_per_run": steps,
        "load_1min": spread(loads),
        "ratio_of_medians": ratio,
        "cpu_ratio_of_medians": cpu_ratio,
        "round_ratios": round_ratios,
        **result,
    }


def print_size(name: str, res: dict) -> None:
    print(f"\n### {name} (load average {res['load_1min']['min']:.1f}-{res['load_1min']['max']:.1f})")
    print(
        "| engine | median s/step | min-max | mean ± std | steps | median CPU s/step "
        "| generation | scoring | log-probs | training |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    engines = [e for e in ("rlvr", "rlvr-baseline", "trl") if e in res]
    for engine in engines:
        s, p = res[engine]["step_s"], res[engine]["phases_median_s"]
        cells = [f"{p[k]:.3f}" if k in p else "-" for k in ("generation", "scoring", "log-probs", "training")]
        print(
            f"| {engine} | {s['median']:.3f} | {s['min']:.3f}-{s['max']:.3f} | {s['mean']:.3f} ± {s['std']:.3f} "
            f"| {s['n']} | {res[engine]['step_cpu_s']['median']:.3f} | " + " | ".join(cells) + " |"
        )
    print(
        f"ratio rlvr/TRL of the medians: {res['ratio_of_medians']:.2f} "
        f"(per round: {', '.join(f'{r:.2f}' for r in res['round_ratios'])})"
        + (f"; baseline/TRL {res['baseline_ratio_of_medians']:.2f}" if "baseline_ratio_of_medians" in res else "")
    )
    print(
        f"ratio of the median CPU seconds per step (main process): {res['cpu_ratio_of_medians']:.2f}"
        + (
            f"; baseline/TRL {res['baseline_cpu_ratio_of_medians']:.2f}"
            if "baseline_cpu_ratio_of_medians" in res
            else ""
        )
    )
    for engine in engines:
        r = res[engine]
        print(
            f"{engine}: tokens/sample {r['tokens_per_sample']:.1f}, mean reward {r['mean_reward']:.3f}, "
            f"steps with a gradient {r['steps_with_gradient']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-run", type=Path, required=True)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--steps", type=int, help="GRPO steps per run at every size (default: each size's own)")
    parser.add_argument("--warmup", type=int, default=1, help="first steps of every run left out of the statistics")
    parser.add_argument("--rounds", type=int, default=2, help="ours, TRL, ours, TRL, ... (load drifts alike)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS), both engines")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="also run the rlvr stage from this src/ folder (another commit's) in every round: before/after",
    )
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported here or in the stage process
    import torch

    torch.set_num_threads(args.threads)
    tiny_run = args.tiny_run.resolve()
    results = {}
    with tempfile.TemporaryDirectory(prefix="trl_grpo_compare-") as tmp:
        for name in args.sizes:
            results[name] = compare_size(SIZES[name], tiny_run, Path(tmp), args)
            print_size(name, results[name])
    import transformers
    import trl

    record = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "baseline_src": str(args.baseline_src) if args.baseline_src else None,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "sizes": results,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
