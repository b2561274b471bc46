"""Math verifier throughput: checks per second in one process and through the 2-worker pool.

    PYTHONPATH=src .venv/bin/python benchmarks/math_verify_bench.py [--n 4000] [--workers 2]

Checks are simple and distinct (integers and fractions, half right, half wrong) so that math-verify's parse caches
do not flatter the numbers. The pool figure includes pickling, pipes and scheduling; it should approach
``workers ×`` the single-process figure on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import time

from rlvr.rewards.math_verifier import check_math
from rlvr.rewards.scorer import RewardScorer


def make_checks(n: int, offset: int = 0) -> tuple[list[str], list[dict]]:
    """``n`` distinct (response, row) pairs: integers and fractions, every other one wrong."""
    responses, rows = [], []
    for k in range(offset, offset + n):
        truth = str(k) if k % 2 else f"\\frac{{{k}}}{{{k + 1}}}"
        answer = truth if k % 4 < 2 else str(k + 7)
        responses.append(f"Working through the steps, the result is \\boxed{{{answer}}}.")
        rows.append({"task_name": "math", "ground_truth": truth})
    return responses, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    responses, rows = make_checks(args.n)
    check_math(responses[0], rows[0]["ground_truth"])  # import and build the metric outside the timing
    start = time.perf_counter()
    single = [check_math(r, row["ground_truth"]).reward for r, row in zip(responses, rows)]
    single_rate = args.n / (time.perf_counter() - start)

    with RewardScorer(num_workers=args.workers, timeout_s=10.0) as scorer:
        warm_responses, warm_rows = make_checks(200, offset=10 * args.n)
        start = time.perf_counter()
        scorer.score_batch(["math"] * 200, warm_responses, warm_rows)
        startup_s = time.perf_counter() - start
        start = time.perf_counter()
        result = scorer.score_batch(["math"] * args.n, responses, rows)
        pool_rate = args.n / (time.perf_counter() - start)
    assert result.rewards == single, "pool and single-process rewards differ"
    print(
        json.dumps(
            {
                "checks": args.n,
                "mean_reward": sum(single) / args.n,
                "single_process_checks_per_s": round(single_rate),
                f"pool_{args.workers}_workers_checks_per_s": round(pool_rate),
                "pool_first_200_checks_incl_startup_s": round(startup_s, 3),
                "errors": sum(result.errors.values()),
            }
        )
    )


if __name__ == "__main__":
    main()
