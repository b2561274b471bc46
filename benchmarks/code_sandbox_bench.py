"""Code reward throughput: small programs per second through the batch scorer (goal: >= 50/s on 2 cores).

    PYTHONPATH=src .venv/bin/python benchmarks/code_sandbox_bench.py [--n 200] [--rounds 3] [--concurrency 4]
        [--cases 2] [--baseline-src <another checkout>/src] [--json out.json]

Each program is a short stdio solution (read two integers, print their sum; every fourth one is wrong) scored as
a code row by :class:`rlvr.rewards.scorer.RewardScorer` (what the GRPO loop and ``nemotron rewards score`` use),
each in its own sandbox: a child forked from the pre-started harness server, namespaces, read-only mounts,
privilege drop, one forked grandchild per test case. The sandbox is started (and the interpreter probed) before the
timing, as a training run has it after its first batch.

Every round runs in a fresh process per engine (this checkout's ``src``, and ``--baseline-src`` when given), the
engines alternating within a round so that they share the machine's load drift. Per round: programs/s, and CPU
ms per program: the scoring process plus the harness server and everything it forked (its reaped children's
times in ``/proc``); kernel threads' share (e.g. tearing down network namespaces) is not in it. Printed: per
engine the median (min-max) of both over the rounds, the load averages, and which containment took effect (a
fallback without root is cheaper and weaker).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


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


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and of its reaped descendants (utime, stime, cutime, cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _self_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_round(n: int, cases: int, concurrency: int) -> dict:
    """Score ``n`` programs once (after a warm-up batch) in this process: rate, CPU per program, containment."""
    from rlvr.rewards.registry import get_verifier
    from rlvr.rewards.sandbox import Sandbox
    from rlvr.rewards.scorer import RewardScorer

    responses, tests = make_jobs(n, cases)
    rows = [{"task_name": "code", "tests": t} for t in tests]
    expected = [0.0 if k % 4 == 3 else 1.0 for k in range(n)]
    with (
        Sandbox(max_concurrency=concurrency) as sandbox,
        RewardScorer(sandbox_concurrency=concurrency) as scorer,
    ):
        get_verifier("code").sandbox = sandbox
        containment = sandbox.containment()  # starts the harness server and probes the interpreter
        scorer.score_batch(["code"] * 8, responses[:8], rows[:8])  # the scorer's threads, warm
        (server,) = sandbox._servers.values()  # one interpreter, one server
        cpu_start = _self_cpu_s() + _tree_cpu_s(server.process.pid)
        start = time.perf_counter()
        result = scorer.score_batch(["code"] * n, responses, rows)
        elapsed = time.perf_counter() - start
        cpu = _self_cpu_s() + _tree_cpu_s(server.process.pid) - cpu_start
    assert result.rewards == expected, [e for e in result.details if e][:3]
    return {"programs_per_s": n / elapsed, "cpu_ms_per_program": 1000 * cpu / n, "containment": containment}


def _run_engine(src: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--one-round", "--n", str(args.n), "--cases", str(args.cases)]
    command += ["--concurrency", str(args.concurrency)]
    env = {**os.environ, "PYTHONPATH": str(src)}
    load_before = os.getloadavg()[0]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return {**json.loads(out.splitlines()[-1]), "load": round((load_before + os.getloadavg()[0]) / 2, 2)}


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--cases", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline-src", type=Path, help="another checkout's src/, timed in the same rounds")
    parser.add_argument("--json", type=Path, help="write every round's figures here")
    parser.add_argument("--one-round", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_round:
        print(json.dumps(one_round(args.n, args.cases, args.concurrency)))
        return

    engines = {"now": SRC, **({"baseline": args.baseline_src.resolve()} if args.baseline_src else {})}
    rounds: dict[str, list[dict]] = {name: [] for name in engines}
    for round_no in range(args.rounds):
        order = list(engines) if round_no % 2 == 0 else list(reversed(engines))
        for name in order:
            rounds[name].append(_run_engine(engines[name], args))
            print(json.dumps({"round": round_no, "engine": name, **rounds[name][-1]}), flush=True)
    summary = {"programs": args.n, "cases_per_program": args.cases, "concurrency": args.concurrency}
    for name, results in rounds.items():
        summary[name] = {
            "programs_per_s": _summary([r["programs_per_s"] for r in results]),
            "cpu_ms_per_program": _summary([r["cpu_ms_per_program"] for r in results]),
            "load": [r["load"] for r in results],
            "containment": results[-1]["containment"],
        }
    if args.baseline_src:
        ratios = [a["programs_per_s"] / b["programs_per_s"] for a, b in zip(rounds["now"], rounds["baseline"])]
        summary["now_vs_baseline_programs_per_s"] = round(statistics.median(ratios), 2)
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "rounds": rounds}, indent=1))


if __name__ == "__main__":
    main()
