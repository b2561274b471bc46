"""Killable worker processes for verifier checks, created once and reused.

Why processes at all: math-verify times itself out with ``signal.alarm``, which works only in a process's main
thread; a pathological answer (``7^{7^{9}}``) can spend seconds inside C code where no Python signal handler runs;
and checks are CPU-bound, so using every core needs processes.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot kill one stuck worker without breaking the whole pool.
Here each worker owns a pipe; the parent enforces a hard wall-clock limit per check (measured from the moment the
worker started that check), SIGKILLs a worker that exceeds it, scores the check as a ``timeout``, puts the checks
queued behind it back in the queue and starts a replacement. A worker that dies (segfault, out of memory) is
handled the same way with cause ``worker_crash``: every check gets exactly one verdict.

Start-up is cheap: workers are forked from a ``forkserver`` that preloads this module and math-verify (sympy is
imported once, ~0.3 s, not once per worker), so starting or replacing a worker costs milliseconds. Workers start
on first use and live until :meth:`VerifierPool.close` (or the end of a ``with`` block).
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import signal
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing import connection as mp_connection
from typing import Any

from rlvr.rewards.verdict import EXCEPTION, TIMEOUT, WORKER_CRASH, Verdict

# (verifier name, response, reference): what one check needs.
Task = tuple[str, str, Any]

_MAX_FAILED_STARTS = 5


def _serve(conn: mp_connection.Connection, memory_limit_mb: int | None) -> None:
    """Worker main loop: receive chunks of ``(index, verifier, response, reference)``, answer one message per check."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business; it closes the pool
    if memory_limit_mb:
        # A runaway sympy evaluation becomes a MemoryError (a counted exception) instead of a machine-wide OOM.
        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from rlvr.rewards.registry import get_verifier

    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        for index, name, response, reference in chunk:
            try:
                verdict = get_verifier(name).check(response, reference)
            except Exception as exc:  # noqa: BLE001 - a verifier bug must not kill the worker
                verdict = Verdict(0.0, EXCEPTION, f"{type(exc).__name__}: {str(exc)[:300]}")
            conn.send((index, verdict.reward, verdict.error, verdict.detail))


@dataclass
class _Worker:
    process: Any
    conn: mp_connection.Connection
    outstanding: deque[int] = field(default_factory=deque)  # indices sent and not yet answered, in order
    clock: float = 0.0  # when the check at the head of ``outstanding`` started


class VerifierPool:
    """``num_workers`` persistent processes that run registered verifiers with a hard per-check timeout.

    ``run(tasks)`` returns one :class:`Verdict` per task, in order. ``memory_limit_mb`` caps each worker's address
    space (RLIMIT_AS); ``chunk_size`` checks travel per message to keep pipe overhead small.
    """

    def __init__(
        self,
        num_workers: int | None = None,
        timeout_s: float = 10.0,
        *,
        memory_limit_mb: int | None = 4096,
        chunk_size: int = 8,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.num_workers = max(1, num_workers if num_workers is not None else (os.cpu_count() or 1))
        self.timeout_s = float(timeout_s)
        self.memory_limit_mb = memory_limit_mb
        self.chunk_size = max(1, chunk_size)
        self.restarts = 0  # workers replaced after a timeout or crash, over the pool's life
        self._workers: list[_Worker] = []
        self._closed = False
        try:
            self._ctx = multiprocessing.get_context("forkserver")
            self._ctx.set_forkserver_preload([__name__, "math_verify"])
        except ValueError:  # platform without forkserver
            self._ctx = multiprocessing.get_context("spawn")

    # -- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> VerifierPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self.close()

    def close(self) -> None:
        """Stop every worker (politely, then by SIGKILL after 2 s); the pool cannot be used afterwards."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            try:
                worker.conn.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 2.0
        for worker in self._workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()
            worker.conn.close()
        self._workers = []

    def _start_worker(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_serve, args=(child_conn, self.memory_limit_mb), daemon=True, name="rlvr-verifier"
        )
        process.start()
        child_conn.close()  # so that the parent sees EOF when the worker dies
        return _Worker(process, parent_conn)

    def _ensure_started(self) -> None:
        if self._closed:
            raise RuntimeError("VerifierPool is closed")
        while len(self._workers) < self.num_workers:
            self._workers.append(self._start_worker())

    def _replace(self, worker: _Worker) -> _Worker:
        worker.process.kill()
        worker.process.join()
        worker.conn.close()
        fresh = self._start_worker()
        self._workers[self._workers.index(worker)] = fresh
        self.restarts += 1
        return fresh

    # -- scheduling ------------------------------------------------------------------------------------------

    def run(self, tasks: Sequence[Task]) -> list[Verdict]:
        """Run every task; each gets exactly one verdict (a timeout or crash is a verdict, not an exception)."""
        results: list[Verdict | None] = [None] * len(tasks)
        if not tasks:
            return []
        self._ensure_started()
        pending: deque[int] = deque(range(len(tasks)))
        remaining = len(tasks)
        failed_starts = 0
        while remaining:
            failed_starts = self._feed(tasks, pending, failed_starts)
            busy = [w for w in self._workers if w.outstanding]
            deadline = min(w.clock for w in busy) + self.timeout_s
            ready = mp_connection.wait([w.conn for w in busy], timeout=max(0.0, deadline - time.monotonic()))
            for worker in busy:
                if worker.conn in ready:
                    remaining -= self._drain(worker, results, pending)
            now = time.monotonic()
            for worker in [w for w in self._workers if w.outstanding and now - w.clock >= self.timeout_s]:
                remaining -= self._fail_head(
                    worker, results, pending, TIMEOUT, f"no answer within {self.timeout_s:g} s; worker killed"
                )
        return results  # type: ignore[return-value]  # every slot is filled once remaining == 0

    def _feed(self, tasks: Sequence[Task], pending: deque[int], failed_starts: int) -> int:
        """Top every worker up to two chunks of work, so that none idles while the parent is busy."""
        chunk = max(1, min(self.chunk_size, -(-len(pending) // (2 * self.num_workers))))
        for worker in list(self._workers):
            while pending and len(worker.outstanding) < 2 * self.chunk_size:
                indices = [pending.popleft() for _ in range(min(chunk, len(pending)))]
                try:
                    worker.conn.send([(i, *tasks[i]) for i in indices])
                except (OSError, ValueError):  # the worker died: requeue this chunk
                    pending.extendleft(reversed(indices))
                    if worker.outstanding:
                        break  # its pipe reads EOF: _drain fails the check it died on and replaces it
                    failed_starts += 1
                    if failed_starts > _MAX_FAILED_STARTS:
                        raise RuntimeError("verifier workers keep dying before taking work") from None
                    worker = self._replace(worker)
                    continue
                if not worker.outstanding:
                    worker.clock = time.monotonic()
                worker.outstanding.extend(indices)
        return failed_starts

    def _drain(self, worker: _Worker, results: list[Verdict | None], pending: deque[int]) -> int:
        """Collect every answer waiting on ``worker``'s pipe; a dead worker fails its current check."""
        finished = 0
        try:
            while worker.outstanding and worker.conn.poll():
                index, reward, error, detail = worker.conn.recv()
                expected = worker.outstanding.popleft()
                assert index == expected, f"worker answered check {index}, expected {expected}"
                results[index] = Verdict(reward, error, detail)
                worker.clock = time.monotonic()
                finished += 1
        except (EOFError, OSError):
            worker.process.join(0.5)
            code = worker.process.exitcode
            finished += self._fail_head(worker, results, pending, WORKER_CRASH, f"worker died (exit code {code})")
        return finished

    def _fail_head(
        self, worker: _Worker, results: list[Verdict | None], pending: deque[int], cause: str, detail: str
    ) -> int:
        """Score the check ``worker`` is stuck on as ``cause``, requeue the rest of its work, replace it."""
        head = worker.outstanding.popleft()
        results[head] = Verdict(0.0, cause, detail)
        pending.extendleft(reversed(worker.outstanding))
        self._replace(worker)
        return 1
