"""The verifier pool gives every check exactly one verdict, kills stuck checks, and survives dead workers."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from rlvr.rewards.math_verifier import check_math
from rlvr.rewards.verdict import TIMEOUT, WORKER_CRASH
from rlvr.rewards.verifier_pool import VerifierPool

# math-verify spends seconds inside sympy comparing 7^(7^9) with 3 (its own 5 s alarm eventually fires).
HANG = ("math", "\\boxed{7^{7^{9}}}", "3")


def test_results_come_back_in_order_and_equal_in_process_scores() -> None:
    """Pool verdicts equal check_math run in this process, in task order, across several chunks."""
    tasks = [("math", f"\\boxed{{{i + i % 3}}}", str(i)) for i in range(40)]
    with VerifierPool(2, timeout_s=10.0, chunk_size=4) as pool:
        verdicts = pool.run(tasks)
        assert pool.run([]) == []
    assert [v.reward for v in verdicts] == [check_math(r, t).reward for _, r, t in tasks]
    assert sum(v.reward for v in verdicts) == 14  # i % 3 == 0 for i in 0..39


def test_stuck_check_is_killed_scored_as_timeout_and_the_rest_finish() -> None:
    """A check past timeout_s is killed (cause 'timeout'); checks queued behind it still get their scores."""
    tasks = [("math", "\\boxed{1}", "1"), HANG, ("math", "\\boxed{2}", "2"), ("math", "\\boxed{2}", "3")]
    with VerifierPool(1, timeout_s=0.5, chunk_size=4) as pool:
        start = time.monotonic()
        verdicts = pool.run(tasks)
        elapsed = time.monotonic() - start
        assert [v.reward for v in verdicts] == [1.0, 0.0, 1.0, 0.0]
        assert [v.error for v in verdicts] == [None, TIMEOUT, None, None]
        assert pool.restarts == 1
        assert elapsed < 3.0  # the hang alone would take 5 s
        assert pool.run([("math", "\\boxed{5}", "5")])[0].reward == 1.0  # the replacement worker serves


def test_worker_killed_mid_check_is_a_counted_crash() -> None:
    """A worker that dies while checking yields 'worker_crash' for that check and a replacement worker."""
    with VerifierPool(1, timeout_s=20.0) as pool:
        pool.run([("math", "\\boxed{1}", "1")])  # start the worker
        pid = pool._workers[0].process.pid
        killer = threading.Timer(0.3, os.kill, args=(pid, signal.SIGKILL))
        killer.start()
        verdicts = pool.run([HANG, ("math", "\\boxed{4}", "4")])
        killer.join()
        assert verdicts[0].error == WORKER_CRASH and verdicts[0].reward == 0.0
        assert verdicts[1].reward == 1.0 and pool.restarts == 1


def test_closed_pool_refuses_work_and_leaves_no_worker() -> None:
    """close() stops the workers; a later run is an error rather than a silent restart."""
    pool = VerifierPool(2, timeout_s=5.0)
    pool.run([("math", "\\boxed{1}", "1")])
    processes = [w.process for w in pool._workers]
    pool.close()
    assert all(not p.is_alive() for p in processes)
    with pytest.raises(RuntimeError, match="closed"):
        pool.run([("math", "\\boxed{1}", "1")])
