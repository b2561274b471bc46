"""Code sandbox throughput: small programs per second through the batch scorer (goal: >= 50/s on 2 cores).

    PYTHONPATH=src .venv/bin/python benchmarks/code_sandbox_bench.py [--n 200] [--concurrency 4] [--cases 1]

Each program is a short stdio solution (read two integers, print their sum; every fourth one is wrong) run in its
own sandbox: interpreter start, namespaces, read-only mounts, privilege drop, one forked child per test case. The
result also shows which containment took effect, since a fallback (no root) is cheaper and weaker.
"""

from __future__ import annotations

import argparse
import json
import time

from rlvr.rewards.code_verifier import CodeVerifier
from rlvr.rewards.sandbox import Sandbox


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
    parser.add_argument("--cases", type=int, default=1)
    args = parser.parse_args()

    from concurrent.futures import ThreadPoolExecutor

    responses, tests = make_jobs(args.n, args.cases)
    with Sandbox(max_concurrency=args.concurrency) as sandbox:
        verifier = CodeVerifier(sandbox=sandbox)
        containment = sandbox.containment()  # also probes the interpreter, outside the timing
        with ThreadPoolExecutor(args.concurrency) as threads:
            start = time.perf_counter()
            verdicts = list(threads.map(verifier.check, responses, tests))
            elapsed = time.perf_counter() - start
    rewards = [v.reward for v in verdicts]
    expected = [0.0 if k % 4 == 3 else 1.0 for k in range(args.n)]
    assert rewards == expected, [v for v in verdicts if v.error][:3]
    print(
        json.dumps(
            {
                "programs": args.n,
                "cases_per_program": args.cases,
                "concurrency": args.concurrency,
                "programs_per_s": round(args.n / elapsed, 1),
                "mean_ms_per_program": round(1000 * elapsed / args.n, 1),
                "containment": containment,
            }
        )
    )


if __name__ == "__main__":
    main()
