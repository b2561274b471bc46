"""Code reward throughput: small programs per second through the batch scorer (goal: >= 50/s on 2 cores).

    PYTHONPATH=src .venv/bin/python benchmarks/code_sandbox_bench.py [--n 200] [--concurrency 4] [--cases 2]

Each program is a short stdio solution (read two integers, print their sum; every fourth one is wrong) scored as
a code row by :class:`rlvr.rewards.scorer.RewardScorer` (what the GRPO loop and ``nemotron rewards score`` use),
each in its own sandbox: a child forked from the pre-started harness server, namespaces, read-only mounts,
privilege drop, one forked grandchild per test case. The sandbox is started (and the interpreter probed) before the
timing, as a training run has it after its first batch. Printed: the median programs/s over the rounds (min-max),
the machine's load average, and which containment took effect, since a fallback (no root) is cheaper and weaker.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from rlvr.rewards.registry import get_verifier
from rlvr.rewards.sandbox import Sandbox
from rlvr.rewards.scorer import RewardScorer


def make_jobs(n: int, cases: int) -> tuple[list[str], list[dict]]:
    """``n`` (response, tests) pairs with ``cases`` stdio cases each; programs 3, 7, 11, ... subtract instead."""
    responses, tests = [], []
    for k in range(n):
        op = "-" if k % 4 == 3 else "+"
        responses.append(f"```python\na, b = map(int, input().split())\nprint(a {op} b)\n```")
        tests.append(
            {
                "kind": "stdio",
                "inputs": [f"{k} {i + 1}\n" for i in range(cases)],
                "outputs": [str(k + i + 1) for i in range(cases)],
                "fn_name": None,
            }
        )
    return responses, tests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    responses, tests = make_jobs(args.n, args.cases)
    rows = [{"task_name": "code", "tests": t} for t in tests]
    expected = [0.0 if k % 4 == 3 else 1.0 for k in range(args.n)]
    code = get_verifier("code")
    rates = []
    with (
        Sandbox(max_concurrency=args.concurrency) as sandbox,
        RewardScorer(sandbox_concurrency=args.concurrency) as scorer,
    ):
        code.sandbox = sandbox
        containment = sandbox.containment()  # starts the harness server and probes the interpreter
        for _ in range(args.rounds):
            start = time.perf_counter()
            result = scorer.score_batch(["code"] * args.n, responses, rows)
            rates.append(args.n / (time.perf_counter() - start))
            assert result.rewards == expected, [e for e in result.details if e][:3]
    print(
        json.dumps(
            {
                "programs": args.n,
                "cases_per_program": args.cases,
                "concurrency": args.concurrency,
                "programs_per_s": f"{statistics.median(rates):.1f} ({min(rates):.1f}-{max(rates):.1f})",
                "load": round(os.getloadavg()[0], 2),
                "containment": containment,
            }
        )
    )


if __name__ == "__main__":
    main()
