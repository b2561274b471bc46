"""Time per GRPO step on the tiny model and data, split into generation, scoring, log-probs and training.

The numbers are the controller's own per-step metrics (``timing/train/*``, ``performance/*`` in
``metrics.jsonl``) from a short run of the real ``rlvr`` stage (``python -m rlvr.stages rlvr``, as Snakemake runs
it), averaged over the steps after ``--warmup``. Validation and checkpointing are off, so a step is exactly:
generate → score → (prev log-probs) → advantages → optimizer step. Two variants run by default:

* ``tiny``: the tiny config at the benchmark shapes (``BENCH_SHAPES``); ``loss_fn.force_on_policy_ratio=true``
  skips the previous-policy log-prob pass (one optimizer step per GRPO step makes it equal to the current policy's);
* ``tiny+logprobs``: the same with ``force_on_policy_ratio=false``, so the log-prob pass is timed too.

    PYTHONPATH=src python benchmarks/grpo_step_bench.py [--tiny-run results/tiny] [--steps 20] [--warmup 2]

Runs use one torch thread by default (``--threads``): on a small machine shared with other work, two intra-op
threads per process make step times swing tenfold (threads wait on each other), one thread keeps them stable.

``--tiny-run`` reuses a run folder of ``nemotron steps run rl/nemo_rl/rlvr -c tiny`` (it needs ``rl_prep/`` and
``hf_to_megatron/checkpoint_megatron``); without it the folder is built first with ``--until rl_prep`` (the
tiny SFT takes a few minutes on two cores). ``--tiny-set KEY=VALUE`` (repeatable) overrides a ``tiny.*`` key of that
build, e.g. ``--tiny-set tiny.sft.steps=1100 --tiny-set tiny.sft.label_smoothing=0`` for the policy the figures in
benchmarks/README.md were measured on.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEP = "rl/nemo_rl/rlvr"
# What each phase is, as the controller times it.
PHASES = {
    "generation": "timing/train/generation",
    "scoring": "timing/train/reward_calculation",
    "log-probs": "timing/train/policy_and_reference_logprobs",
    "advantages": "timing/train/advantage_calculation",
    "training": "timing/train/policy_training",
    "step total": "timing/train/total_step_time",
}
RATES = {
    "tokens/s (prompt+response, whole step)": "performance/tokens_per_sec",
    "generated tokens/s (generation phase)": "performance/generation_tokens_per_sec",
    "generated tokens per sample": "train/mean_gen_tokens_per_sample",
}
# The measured shapes: 8 prompts x 8 generations, one optimizer step over 2 micro-batches of 32 (the tiny config
# of when these benchmarks were written; the shipped tiny now trains 16 x 16), pinned so that the figures in
# benchmarks/README.md and the TRL comparison stay reproducible.
BENCH_SHAPES = [
    "grpo.num_prompts_per_step=8",
    "grpo.num_generations_per_prompt=8",
    "policy.train_global_batch_size=64",
    "policy.train_micro_batch_size=32",
    "policy.generation_batch_size=64",
    "policy.optimizer.kwargs.lr=3e-5",
]
# No validation, no checkpoints: a timed step is exactly generate -> score -> (log-probs) -> advantages -> train.
BENCH_FIXED = [
    "grpo.val_period=0",
    "grpo.val_at_start=false",
    "grpo.val_at_end=false",
    "checkpointing.enabled=false",
    "logger.tensorboard_enabled=false",
]
BENCH_OVERRIDES = [*BENCH_FIXED, *BENCH_SHAPES]
VARIANTS = {"tiny": [], "tiny+logprobs": ["loss_fn.force_on_policy_ratio=false"]}


def env(src: Path | None = None) -> dict[str, str]:
    """The stage's environment: ``src`` (default this checkout's ``src/``) first on PYTHONPATH."""
    out = dict(os.environ)
    out.pop("RL_OUTPUT_DIR", None)
    out["PYTHONPATH"] = str(src or REPO / "src") + os.pathsep + out.get("PYTHONPATH", "")
    return out


def build_tiny_run(workdir: Path, overrides: list[str]) -> Path:
    """``results/tiny`` with the tiny data, SFT policy, its checkpoint_megatron and rl_prep (via the CLI)."""
    cmd = [sys.executable, "-m", "rlvr.cli.main", "steps", "run", STEP, "-c", "tiny", *overrides, "--until", "rl_prep"]
    print(f"building the tiny run folder in {workdir} ...", flush=True)
    proc = subprocess.run(cmd, cwd=workdir, env=env(), capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"building the tiny run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return workdir / "results" / "tiny"


# The rlvr rule's outputs (rules/rlvr.smk), under the benchmark's run folder.
OUTPUTS = {"ckpt": "checkpoint_megatron", "summary": "summary.json", "metrics": "metrics.jsonl"}


def run_rlvr(
    tiny_run: Path, run_dir: Path, overrides: list[str], policy: Path | None = None, src: Path | None = None
) -> tuple[list[dict], float]:
    """Run the rlvr stage; return its metrics.jsonl lines and the process wall time (s).

    ``policy``: a ``checkpoint_megatron`` to train instead of the tiny run's own; ``src``: the ``rlvr`` package
    folder the stage runs from (default this checkout's, e.g. another commit's for a before/after comparison).
    """
    sys.path.insert(0, str(REPO / "src"))
    from rlvr.config import load_step_config
    from rlvr.stages.stage_config import stage_config_path, write_stage_configs
    from rlvr.steps.index import resolve_step

    cfg = load_step_config(resolve_step(STEP), "tiny", overrides).engine_view()
    write_stage_configs(run_dir, {"rlvr": cfg})
    cmd = [
        sys.executable,
        "-m",
        "rlvr.stages",
        "rlvr",
        "--config",
        str(stage_config_path(run_dir, "rlvr")),
        "--data",
        str(tiny_run / "rl_prep"),
        "--policy",
        str(policy or tiny_run / "hf_to_megatron" / "checkpoint_megatron"),
        "--base-model",
        str(tiny_run / "tiny_sft" / "policy"),
        *(f"--{flag}={run_dir / 'rlvr' / name}" for flag, name in OUTPUTS.items()),
        f"--work-dir={run_dir / 'rlvr'}",
    ]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env(src), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"the rlvr stage failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    lines = (run_dir / "rlvr" / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], wall


def summarize(metrics: list[dict], warmup: int) -> dict[str, dict[str, float]]:
    """Mean, sample std and median of every phase and rate over the training steps after ``warmup``.

    The median is printed first: on a shared machine a few steps that lost the CPU to another process inflate
    the mean and the std far more than the typical step.
    """
    steps = [m for m in metrics if m["step"] > warmup and PHASES["step total"] in m]
    if len(steps) < 2:
        raise SystemExit(f"only {len(steps)} steps after a warm-up of {warmup}: raise --steps")
    out = {}
    for name, key in {**PHASES, **RATES, "samples per step": "train/global_valid_seqs"}.items():
        values = [float(m.get(key) or 0.0) for m in steps]
        out[name] = {
            "mean": statistics.fmean(values),
            "std": statistics.stdev(values),
            "median": statistics.median(values),
        }
    return out


def format_table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    names = list(results)
    header = "| | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names)
    rows = []
    for phase in PHASES:
        cells = []
        for n in names:
            s = results[n][phase]
            share = "" if phase == "step total" else f" [{100 * s['median'] / results[n]['step total']['median']:.0f}%]"
            cells.append(f"{1000 * s['median']:.1f}{share} ({1000 * s['mean']:.1f} ± {1000 * s['std']:.1f})")
        rows.append(f"| {phase} ms | " + " | ".join(cells) + " |")
    for rate in [*RATES, "samples per step"]:
        rows.append(f"| {rate} | " + " | ".join(f"{results[n][rate]['median']:.1f}" for n in names) + " |")
    return "\n".join([header, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-run", type=Path, help="existing results/tiny folder (rl_prep + checkpoint)")
    parser.add_argument("--steps", type=int, default=20, help="GRPO steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the averages")
    parser.add_argument(
        "--tiny-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a tiny.* override when building the tiny run (repeatable)",
    )
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS) of the runs")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    bad = [kv for kv in args.tiny_set if not kv.startswith("tiny.") or "=" not in kv]
    if bad:
        parser.error(f"--tiny-set takes tiny.KEY=VALUE, got {bad[0]!r}")
    if args.tiny_set and args.tiny_run:
        parser.error("--tiny-set shapes a tiny run that the benchmark builds; with --tiny-run nothing is built")
    with tempfile.TemporaryDirectory(prefix="grpo_step_bench-") as tmp:
        tiny_run = args.tiny_run
        if tiny_run is None:
            tiny_run = build_tiny_run(Path(tmp), args.tiny_set)
        results = {}
        for name in args.variants:
            overrides = [*BENCH_OVERRIDES, f"grpo.max_num_steps={args.steps}", *VARIANTS[name]]
            metrics, wall = run_rlvr(tiny_run.resolve(), Path(tmp) / name, overrides)
            results[name] = summarize(metrics, args.warmup)
            print(f"{name}: {args.steps} steps, process wall time {wall:.1f} s (incl. start-up)", flush=True)
    print(
        f"\nmedian [share of the median step] (mean ± std) over steps {args.warmup + 1}..{args.steps} "
        f"(torch threads: {args.threads}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)\n"
    )
    print(format_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
