"""Math reward throughput: raw math-verify in one process against rlvr's scoring paths, side by side.

    PYTHONPATH=src .venv/bin/python benchmarks/math_verify_bench.py [--n 2000] [--rounds 5] [--workers 2]

Three ways to score the same (response, ground truth) pairs, in alternating order within each round so that they
share the machine's load drift:

* ``raw``: math-verify's ``math_metric`` configured as NeMo-RL's ``hf_math_verify``, called once per pair in this
  process (gold ``\\boxed{truth}``), as NeMo-RL's math environment does in each of its workers;
* ``scorer``: :class:`rlvr.rewards.scorer.RewardScorer` with ``--workers`` processes, already started (what the
  GRPO loop uses every step): the exact-match fast path in this process, math-verify in the pool for the rest;
* ``cli``: ``nemotron rewards score``'s path, :func:`rlvr.rewards.score_cli.score_files` on JSONL files with a
  fresh scorer (row reading through rl_prep's code, pool start-up and output writing included; not the
  interpreter start).

Three response sets: ``tiny`` (bare integers as the tiny policy writes them; about half right, some cut off or
garbled), ``latex`` (a sentence ending in ``\\boxed{}``, integers and fractions, half right) and ``forms``
(answers in another form than the ground truth: decimals for fractions, products, square roots; half right),
which the exact fast path cannot decide, so it measures the worker pool against raw math-verify. Every pair is
distinct so that math-verify's parse caches do not flatter the raw figure. The rewards of the three paths must be
identical. Printed: per set, the median checks/s of each path over the rounds (min-max), the median of the
per-round ratios to raw, and CPU ms per check of raw and of the scorer (this process plus its worker processes).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

from math_verify import ExprExtractionConfig, LatexExtractionConfig, math_metric

from rlvr.rewards.score_cli import score_files
from rlvr.rewards.scorer import RewardScorer


def tiny_set(n: int, offset: int) -> tuple[list[str], list[str]]:
    """Bare integer answers: right 1 in 2, off by a digit 1 in 4, a cut-off or garbled answer 1 in 4."""
    responses, truths = [], []
    for k in range(offset, offset + n):
        truth = str(k - n // 2)
        kind = k % 8
        if kind < 4:
            response = truth
        elif kind < 6:
            response = str(int(truth) + 10 * (kind - 3))
        elif kind == 6:
            response = truth[:-1] + "+"
        else:
            response = "A:" + truth[::-1]
        responses.append(response)
        truths.append(truth)
    return responses, truths


def latex_set(n: int, offset: int) -> tuple[list[str], list[str]]:
    """A sentence ending in a boxed answer: integers and fractions, every other pair of answers wrong."""
    responses, truths = [], []
    for k in range(offset, offset + n):
        truth = str(k) if k % 2 else f"\\frac{{{k}}}{{{k + 1}}}"
        answer = truth if k % 4 < 2 else str(k + 7)
        responses.append(f"Working through the steps, the result is \\boxed{{{answer}}}.")
        truths.append(truth)
    return responses, truths


def forms_set(n: int, offset: int) -> tuple[list[str], list[str]]:
    """Right or wrong answers written in another form than the ground truth: math-verify has to compare them."""
    responses, truths = [], []
    for k in range(offset, offset + n):
        wrong = (k // 3) % 2
        if k % 3 == 0:
            truth, answer = f"\\frac{{{k}}}{{{k + 1}}}", f"{k / (k + 1) + (0.01 if wrong else 0):.7f}"
        elif k % 3 == 1:
            truth, answer = str(2 * k), f"2 \\cdot {k + wrong}"
        else:
            truth, answer = f"{k}\\sqrt{{2}}", f"\\sqrt{{{2 * (k + wrong) ** 2}}}"
        responses.append(f"So the answer is \\boxed{{{answer}}}.")
        truths.append(truth)
    return responses, truths


def _cpu_s(pids: list[int]) -> float:
    """CPU seconds of this process and of the live processes ``pids``."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    total = usage.ru_utime + usage.ru_stime
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def time_raw(responses: list[str], truths: list[str]) -> tuple[float, list[float]]:
    metric = math_metric(
        gold_extraction_target=(LatexExtractionConfig(),),
        pred_extraction_target=(ExprExtractionConfig(), LatexExtractionConfig()),
    )
    start = time.perf_counter()
    rewards = [float(metric(["\\boxed{" + t + "}"], [r])[0]) for r, t in zip(responses, truths)]
    return time.perf_counter() - start, rewards


def time_scorer(responses: list[str], truths: list[str], scorer: RewardScorer) -> tuple[float, list[float]]:
    rows = [{"task_name": "math", "ground_truth": t} for t in truths]
    start = time.perf_counter()
    result = scorer.score_batch(["math"] * len(rows), responses, rows)
    assert not any(result.errors.values()), result.errors
    return time.perf_counter() - start, result.rewards


def time_cli(responses: list[str], truths: list[str], workers: int, folder: Path) -> tuple[float, list[float]]:
    data, answers, out = folder / "rows.jsonl", folder / "responses.jsonl", folder / "scores.jsonl"
    data.write_text("".join(json.dumps({"problem": "?", "expected_answer": t}) + "\n" for t in truths))
    answers.write_text("".join(json.dumps({"response": r}) + "\n" for r in responses))
    start = time.perf_counter()
    with RewardScorer(num_workers=workers) as scorer, contextlib.redirect_stderr(io.StringIO()):
        score_files(data, answers, out, scorer=scorer)
    elapsed = time.perf_counter() - start
    return elapsed, [json.loads(line)["reward"] for line in out.read_text().splitlines()]


def bench_set(name: str, make, args: argparse.Namespace, scorer: RewardScorer, folder: Path) -> dict:
    rates: dict[str, list[float]] = {"raw": [], "scorer": [], "cli": []}
    cpu: dict[str, list[float]] = {"raw": [], "scorer": []}
    for round_no in range(args.rounds):
        responses, truths = make(args.n, offset=(round_no + 1) * 10 * args.n)  # fresh pairs every round
        calls = {
            "raw": (time_raw, ()),
            "scorer": (time_scorer, (scorer,)),
            "cli": (time_cli, (args.workers, folder)),
        }
        order = list(calls) if round_no % 2 == 0 else list(reversed(calls))
        rewards = {}
        for path in order:
            timer, extra = calls[path]
            workers = [w.process.pid for w in scorer.pool._workers] if path == "scorer" else []  # started already
            cpu_start = _cpu_s(workers)
            elapsed, rewards[path] = timer(responses, truths, *extra)
            if path in cpu:
                cpu[path].append(1000 * (_cpu_s(workers) - cpu_start) / args.n)
            rates[path].append(args.n / elapsed)
        assert rewards["scorer"] == rewards["raw"] == rewards["cli"], f"{name}: the paths' rewards differ"
    summary = {"set": name, "checks": args.n, "rounds": args.rounds, "mean_reward": sum(rewards["raw"]) / args.n}
    for path, values in rates.items():
        summary[f"{path}_checks_per_s"] = f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"
    for path in ("scorer", "cli"):
        ratios = [p / r for p, r in zip(rates[path], rates["raw"])]
        summary[f"{path}_vs_raw"] = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
    for path, values in cpu.items():
        summary[f"{path}_cpu_ms_per_check"] = round(statistics.median(values), 3)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="checks per set and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sets", default="tiny,latex,forms", help="comma-separated: tiny, latex, forms")
    args = parser.parse_args()

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # per-sample warnings, as NeMo-RL silences them
    with contextlib.suppress(PermissionError):  # already a session leader
        # A session of its own: where the kernel shares CPU per session (autogroup), raw math-verify and the
        # scorer's pool (whose workers stay in this session) then share one session's CPU alike, apart from the shell.
        os.setsid()
    time_raw(*tiny_set(50, offset=0))  # import math-verify and sympy outside the timing
    with RewardScorer(num_workers=args.workers) as scorer, tempfile.TemporaryDirectory() as tmp:
        time_scorer(*forms_set(200, offset=0), scorer)  # start the pool outside the timing
        sets = {"tiny": tiny_set, "latex": latex_set, "forms": forms_set}
        for name in args.sets.split(","):
            make = sets[name]
            load_before = os.getloadavg()[0]
            summary = bench_set(name, make, args, scorer, Path(tmp))
            print(json.dumps({**summary, "load": round((load_before + os.getloadavg()[0]) / 2, 1)}), flush=True)


if __name__ == "__main__":
    main()
