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

Two response sets: ``tiny`` (bare integers as the tiny policy writes them; about half right, some cut off or
garbled) and ``latex`` (a sentence ending in ``\\boxed{}``, integers and fractions, half right). Every pair is
distinct so that math-verify's parse caches do not flatter the raw figure. The rewards of the three paths must be
identical. Printed: per set, the median checks/s of each path over the rounds (min-max), and the median of the
per-round ratios to raw.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
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
            elapsed, rewards[path] = timer(responses, truths, *extra)
            rates[path].append(args.n / elapsed)
        assert rewards["scorer"] == rewards["raw"] == rewards["cli"], f"{name}: the paths' rewards differ"
    summary = {"set": name, "checks": args.n, "rounds": args.rounds, "mean_reward": sum(rewards["raw"]) / args.n}
    for path, values in rates.items():
        summary[f"{path}_checks_per_s"] = f"{statistics.median(values):.0f} ({min(values):.0f}-{max(values):.0f})"
    for path in ("scorer", "cli"):
        ratios = [p / r for p, r in zip(rates[path], rates["raw"])]
        summary[f"{path}_vs_raw"] = round(statistics.median(ratios), 2)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="checks per set and round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    logging.getLogger("math_verify").setLevel(logging.ERROR)  # per-sample warnings, as NeMo-RL silences them
    time_raw(*tiny_set(50, offset=0))  # import math-verify and sympy outside the timing
    with RewardScorer(num_workers=args.workers) as scorer, tempfile.TemporaryDirectory() as tmp:
        time_scorer(*latex_set(200, offset=0), scorer)  # start the pool outside the timing
        for name, make in (("tiny", tiny_set), ("latex", latex_set)):
            print(json.dumps({**bench_set(name, make, args, scorer, Path(tmp)), "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
