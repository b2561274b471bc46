"""Validation gain of GRPO: this engine's ``rlvr`` stage against TRL's ``GRPOTrainer``, same start, same budget.

Both engines train the tiny SFT policy (ours from ``hf_to_megatron/checkpoint_megatron``, TRL from the HF folder
``tiny_sft/policy``: bit-identical weights) on the tiny RL prompts (``rl_prep/train.jsonl``) for the same number
of GRPO steps at the tiny run's setting (``LEARNING``): 16 prompts × 16 generations per step, at most 8 new
tokens, temperature 1, one optimizer step per GRPO step, AdamW at a constant lr 1e-4, ε 0.2/0.28, no KL term,
token-level loss, reward = our math verifier (:class:`rlvr.rewards.scorer.RewardScorer`). The TRL side is
``trl_grpo_compare.trl_run``, ours ``grpo_step_bench.run_rlvr`` (the real stage process) with the tiny config,
validation and checkpoints off; both shapes come from ``bench_sizes``. What still differs is each engine's own
algorithm, which is what is compared: our advantage is NeMo-RL's leave-one-out baseline over the peers' std (TRL:
group mean and std), our prompts come in our data order (TRL: its sampler's), each samples with its own RNG.
Extra engines ``rlvr+KEY=VALUE`` run the stage with that config override (e.g.
``rlvr+grpo.use_leave_one_out_baseline=false``, TRL's baseline).

Then every trained policy (ours exported with ``megatron_to_hf``, as the pipeline does) and the SFT policy itself
are re-scored identically, by neither engine's sampler: ``transformers``' ``model.generate`` on the 128 held-out
``tiny_data/rl_val.jsonl`` problems, ``--samples`` samples per prompt at temperature 1 (no top-k/top-p), at most
8 new tokens, one fixed seed for every policy (:func:`rlvr.tiny.accuracy.generate_answers`), each answer scored
by the math verifier; greedy accuracy is reported too. Gain = accuracy - the SFT policy's accuracy. The ± of a
difference is the standard error of the per-prompt paired differences (re-scoring noise and prompt mix); it
does not include the run-to-run noise of training, which ``--seeds`` with several seeds shows.

    PYTHONPATH=src python benchmarks/trl_learning_compare.py --tiny-run results/tiny [--steps 200] [--seeds 42]
        [--engines rlvr trl] [--samples 16] [--json benchmarks/results/trl_learning_compare.json]

``--tiny-run`` is a folder of ``nemotron steps run rl/nemo_rl/rlvr -c tiny`` (``--until rl_prep`` is enough). By
default ours trains in its stage process while TRL trains in this one, one torch thread each (``--threads``), so
the two share the 2-core machine; their wall times are recorded but are not a speed comparison (see
``trl_grpo_compare.py`` for that). Needs the ``bench`` extra (trl 1.16.0).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sizes import SIZES, Size, our_overrides  # noqa: E402
from grpo_step_bench import BENCH_FIXED, REPO, run_rlvr  # noqa: E402
from trl_grpo_compare import spread, trl_run  # noqa: E402

sys.path.insert(0, str(REPO / "src"))

# The tiny run's GRPO setting (steps/rl/nemo_rl/rlvr/config/tiny.yaml): 16 x 16 rollouts, one optimizer step over
# micro-batches of 64, lr 1e-4.
LEARNING = dataclasses.replace(
    SIZES["tiny"], name="tiny-learning", prompts=16, generations=16, micro_batch=64, steps=200, lr=1e-4
)


def train_ours(tiny_run: Path, workdir: Path, size: Size, seed: int, extra: list[str]) -> tuple[Path, dict]:
    """Train with the rlvr stage (``extra``: config overrides) and export the policy as an HF folder."""
    from rlvr.convert.hf_megatron import megatron_to_hf

    overrides = [*BENCH_FIXED, *our_overrides(size), f"grpo.max_num_steps={size.steps}", f"grpo.seed={seed}", *extra]
    metrics, wall = run_rlvr(tiny_run, workdir, overrides)
    steps = [m for m in metrics if "train/raw_reward" in m]
    hf = megatron_to_hf(str(workdir / "rlvr" / "checkpoint_megatron"), str(workdir / "hf"))
    return hf, {
        "wall_s": wall,
        "steps": len(steps),
        "train_reward_first_10": statistics.fmean(m["train/raw_reward"] for m in steps[:10]),
        "train_reward_last_10": statistics.fmean(m["train/raw_reward"] for m in steps[-10:]),
        "overrides": extra,
    }


def train_trl(tiny_run: Path, workdir: Path, size: Size, seed: int) -> tuple[Path, dict]:
    """Train with TRL's GRPOTrainer (``trl_grpo_compare.trl_run``) and save the policy as an HF folder."""
    started = time.perf_counter()
    run = trl_run(tiny_run, workdir, size, size.steps, tiny_run / "tiny_sft" / "policy", seed, save_to=workdir / "hf")
    rewards = [w["reward"] for w in run["work"]]
    return workdir / "hf", {
        "wall_s": time.perf_counter() - started,
        "steps": len(rewards),
        "train_reward_first_10": statistics.fmean(rewards[:10]),
        "train_reward_last_10": statistics.fmean(rewards[-10:]),
    }


def rescore(hf_dir: Path, tokenizer_dir: Path, rows: list[dict], samples: int, seed: int, new_tokens: int) -> dict:
    """Per-prompt sampled accuracy (``samples`` answers at temperature 1) and greedy accuracy of one HF policy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlvr.tiny.accuracy import generate_answers, score_answer

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=torch.float32)
    problems = [r["problem"] for r in rows]

    def per_prompt(answers: list[list[str]]) -> list[float]:
        return [
            statistics.fmean(score_answer(a, r["expected_answer"]) for a in group) for r, group in zip(rows, answers)
        ]

    sampled = per_prompt(
        generate_answers(
            model,
            tokenizer,
            problems,
            samples_per_prompt=samples,
            temperature=1.0,
            max_new_tokens=new_tokens,
            seed=seed,
        )
    )
    greedy = per_prompt(generate_answers(model, tokenizer, problems, max_new_tokens=new_tokens))
    return {"per_prompt": sampled, "accuracy": statistics.fmean(sampled), "greedy_accuracy": statistics.fmean(greedy)}


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean of the per-prompt differences ``a - b`` and its standard error."""
    diffs = [x - y for x, y in zip(a, b)]
    return {"mean": statistics.fmean(diffs), "se": statistics.stdev(diffs) / len(diffs) ** 0.5}


def train_engines(engines: list[str], tiny_run: Path, tmp: Path, size: Size, seed: int, parallel: bool) -> dict:
    """Train every engine once from the SFT policy; ``{engine: (hf folder, info)}``. Ours run in a thread (their
    stage is a subprocess) while TRL trains here when ``parallel``."""
    ours = [e for e in engines if e != "trl"]

    def run_ours() -> dict:
        return {
            e: train_ours(tiny_run, tmp / f"{seed}-{i}-rlvr", size, seed, e.split("+")[1:]) for i, e in enumerate(ours)
        }

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(run_ours) if parallel else None
        done = {} if parallel else run_ours()
        if "trl" in engines:
            done["trl"] = train_trl(tiny_run, tmp / f"{seed}-trl", size, seed)
        if pending is not None:
            done.update(pending.result())
    return done


def compare(args: argparse.Namespace, tiny_run: Path, tmp: Path, save) -> dict:
    """Train every engine for every seed, re-score all policies, and gather gains (module docstring); ``save``
    gets the result so far after every seed."""
    size = dataclasses.replace(LEARNING, steps=args.steps)
    sft = tiny_run / "tiny_sft" / "policy"
    rows = [json.loads(line) for line in (tiny_run / "tiny_data" / "rl_val.jsonl").read_text().splitlines()]
    score = {"samples": args.samples, "seed": args.score_seed, "new_tokens": size.new_tokens}
    base = rescore(sft, sft, rows, args.samples, args.score_seed, size.new_tokens)
    runs = []
    for seed in args.seeds:
        load_before = os.getloadavg()
        trained = train_engines(args.engines, tiny_run, tmp, size, seed, args.parallel)
        scores = {
            e: rescore(hf, sft, rows, args.samples, args.score_seed, size.new_tokens) for e, (hf, _) in trained.items()
        }
        run = {"seed": seed, "load_1_5_15_before": load_before, "load_1_5_15_after": os.getloadavg(), "engines": {}}
        for engine, (_, info) in trained.items():
            s = scores[engine]
            run["engines"][engine] = {
                **info,
                "accuracy": s["accuracy"],
                "greedy_accuracy": s["greedy_accuracy"],
                "gain": paired(s["per_prompt"], base["per_prompt"]),
            }
            if engine != "trl" and "trl" in scores:
                run["engines"][engine]["minus_trl"] = paired(s["per_prompt"], scores["trl"]["per_prompt"])
        runs.append(run)
        print_run(run, base)
        result = {
            "shape": {**vars(size), "model": None},
            "rescoring": {**score, "prompts": len(rows)},
            "sft": {k: base[k] for k in ("accuracy", "greedy_accuracy")},
            "runs": runs,
            "gain_over_seeds": {e: spread([r["engines"][e]["gain"]["mean"] for r in runs]) for e in args.engines},
        }
        save(result)
    return result


def print_run(run: dict, base: dict) -> None:
    load = run["load_1_5_15_before"]
    print(f"\n### seed {run['seed']} (load average before: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f})")
    print(f"SFT policy: sampled accuracy {base['accuracy']:.3f}, greedy {base['greedy_accuracy']:.3f}")
    print("| engine | sampled accuracy | gain ± SE | vs TRL ± SE | greedy | train reward first/last 10 | wall s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for engine, r in run["engines"].items():
        vs = f"{r['minus_trl']['mean']:+.3f} ± {r['minus_trl']['se']:.3f}" if "minus_trl" in r else "-"
        print(
            f"| {engine} | {r['accuracy']:.3f} | {r['gain']['mean']:+.3f} ± {r['gain']['se']:.3f} | {vs} "
            f"| {r['greedy_accuracy']:.3f} | {r['train_reward_first_10']:.3f} / {r['train_reward_last_10']:.3f} "
            f"| {r['wall_s']:.0f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-run", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=LEARNING.steps, help="GRPO steps of every engine")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42], help="one training run per engine and seed")
    parser.add_argument(
        "--engines",
        nargs="+",
        default=["rlvr", "trl"],
        help="rlvr, trl, or rlvr+KEY=VALUE[+KEY=VALUE] (our stage with those config overrides)",
    )
    parser.add_argument("--samples", type=int, default=16, help="re-scoring samples per rl_val prompt")
    parser.add_argument("--score-seed", type=int, default=0, help="the re-scoring sampler's seed (every policy)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS), every process")
    parser.add_argument("--sequential", dest="parallel", action="store_false", help="train the engines in turn")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    bad = [e for e in args.engines if e != "trl" and e.split("+")[0] != "rlvr"]
    if bad:
        parser.error(f"unknown engine {bad[0]!r}: use rlvr, trl or rlvr+KEY=VALUE")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported here or in the stage process
    import torch

    torch.set_num_threads(args.threads)
    import transformers
    import trl

    header = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "parallel": args.parallel,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
    }

    def save(result: dict) -> None:
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({**header, **result}, indent=1) + "\n")

    with tempfile.TemporaryDirectory(prefix="trl_learning_compare-") as tmp:
        result = compare(args, args.tiny_run.resolve(), Path(tmp), save)
    print(
        "\ngain over seeds (median, min-max): "
        + "; ".join(
            f"{e} {s['median']:+.3f} ({s['min']:+.3f}..{s['max']:+.3f})" for e, s in result["gain_over_seeds"].items()
        )
    )


if __name__ == "__main__":
    main()
