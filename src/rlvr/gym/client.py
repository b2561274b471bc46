"""Rewards from NeMo-Gym resource servers: start/health-check the servers, score batches over ``/verify``.

``GymRewardClient(env.nemo_gym)`` reads ``resource_servers`` (name -> ``{url, kind}``), ``request_timeout_s``
(default 60) and ``max_retries`` (default 3), plus the optional keys ``agent_to_server``,
``max_concurrent_requests`` (default 32), ``retry_backoff_s`` (default 1.0) and ``thinking_tags`` (default none).

* :meth:`~GymRewardClient.start` starts a :class:`~rlvr.gym.server.LocalServerProcess` for every server with
  ``url: null`` (our ``math``/``code`` verifiers on 127.0.0.1, ephemeral port), then health-checks every server
  (``GET /health``, see :func:`rlvr.gym.protocol.health_verdict`) with the same retries; servers still down are
  listed in one :class:`~rlvr.errors.UserError`.
* :meth:`~GymRewardClient.score` turns each generated text into a Responses-API ``response``, posts
  ``row + response`` to the row's server (:mod:`rlvr.gym.routing`) from at most ``max_concurrent_requests``
  threads (and, for a local server, no more at once than its verifier runs, so that queueing is not timed by
  ``request_timeout_s``), and returns the rewards in row order. A refused/reset/timed-out request, HTTP 408/429 or
  5xx is retried after ``retry_backoff_s * 2**k`` seconds (k = 0, 1, ...; capped at 30 s) up to ``max_retries`` times;
  then, or at once for another 4xx or a body without a valid ``reward``, the batch fails with a UserError
  naming the server, its URL, the row and the last status or exception. A failed request never becomes a 0.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from rlvr.errors import ConfigError, UserError
from rlvr.gym.protocol import (
    HEALTH_PATH,
    LEGACY_HEALTH_PATH,
    VERIFY_PATH,
    ProtocolError,
    VerifyResult,
    build_response,
    build_verify_request,
    health_verdict,
    parse_verify_response,
)
from rlvr.gym.routing import AgentRouter, agent_of, gym_row_of
from rlvr.gym.server import LocalServerProcess
from rlvr.gym.transport import HttpReply, TransportError, request_json, split_base_url
from rlvr.gym.verifiers import VERIFIER_KINDS, capacity

_MAX_BACKOFF_S = 30.0
_RETRYABLE_STATUS = frozenset({408, 429})
# env.math / env.code keys that configure the verifier behind a local server, by kind.
_LOCAL_OPTION_KEYS = {
    "math": ("num_workers", "timeout_s"),
    "code": ("num_workers", "timeout_s", "memory_mb", "partial_credit"),
}


def local_options_from_env(env_cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Verifier options of local servers by kind, from ``env.math`` / ``env.code`` (other keys are ignored)."""
    env_cfg = _plain(env_cfg)
    return {
        kind: {key: env_cfg[kind][key] for key in keys if key in (env_cfg.get(kind) or {})}
        for kind, keys in _LOCAL_OPTION_KEYS.items()
    }


def _plain(cfg: Any) -> Any:
    """An OmegaConf node as plain containers (other mappings are copied)."""
    if type(cfg).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(cfg, resolve=True)
    return dict(cfg) if isinstance(cfg, Mapping) else cfg


@dataclass(frozen=True)
class ServerSpec:
    """One configured resource server: ``url`` None means "start one of ``kind`` locally"."""

    name: str
    url: str | None
    kind: str | None


def parse_servers(cfg: Mapping[str, Any]) -> list[ServerSpec]:
    """``env.nemo_gym.resource_servers`` as specs; a bad entry is a ConfigError naming its key."""
    servers = cfg["resource_servers"]
    if not isinstance(servers, Mapping) or not servers:
        raise ConfigError(
            "env.nemo_gym.resource_servers is empty; configure at least one server, e.g. "
            "math_with_judge: {url: null, kind: math}"
        )
    specs = []
    for name, entry in servers.items():
        key = f"env.nemo_gym.resource_servers.{name}"
        entry = entry or {}
        url, kind = entry.get("url"), entry.get("kind")
        if kind is not None and kind not in VERIFIER_KINDS:
            raise ConfigError(f"{key}.kind: unknown kind {kind!r}; known kinds: {', '.join(VERIFIER_KINDS)}")
        if url is None and kind is None:
            raise ConfigError(f"{key}: url is null (start a local server) but kind is missing; set kind: math|code")
        if url is not None:
            try:
                split_base_url(str(url))
            except ValueError as exc:
                raise ConfigError(f"{key}.url: {exc}; use http://host:port or null") from None
        specs.append(ServerSpec(str(name), None if url is None else str(url).rstrip("/"), kind))
    return specs


@dataclass
class GymScore:
    """One scored batch: per-row results (in row order), the server of each row, and batch metrics."""

    rewards: list[float]
    mask_sample: list[bool]
    results: list[VerifyResult]
    servers: list[str]
    metrics: dict[str, float]


class _BatchAborted(Exception):
    """Another request of the batch failed; this one stops retrying."""


class GymRewardClient:
    """Client of the resource servers of ``env.nemo_gym``; ``start()``, then ``score()`` per batch, ``close()``."""

    def __init__(
        self,
        cfg: Mapping[str, Any],
        *,
        local_options: Mapping[str, Mapping[str, Any]] | None = None,
        model_name: str = "policy",
        max_concurrency: int | None = None,
        backoff_s: float | None = None,
        health_timeout_s: float = 10.0,
        startup_timeout_s: float = 180.0,
    ) -> None:
        cfg = _plain(cfg)
        self.specs = parse_servers(cfg)
        self.request_timeout_s = float(cfg["request_timeout_s"])
        self.max_retries = int(cfg["max_retries"])
        self.max_concurrency = int(max_concurrency or cfg["max_concurrent_requests"])
        self.backoff_s = float(backoff_s if backoff_s is not None else cfg["retry_backoff_s"])
        tags = cfg["thinking_tags"]
        self.thinking_tags = (str(tags[0]), str(tags[1])) if tags else None
        self.health_timeout_s, self.startup_timeout_s = health_timeout_s, startup_timeout_s
        self.model_name = model_name
        self.local_options = {kind: dict(opts) for kind, opts in (local_options or {}).items()}
        self.router = AgentRouter([s.name for s in self.specs], cfg["agent_to_server"], cfg["config_paths"])
        self.urls: dict[str, str] = {s.name: s.url for s in self.specs if s.url is not None}
        # Requests in flight per server: a local server gets no more than it checks at once, so that waiting
        # happens here and does not eat into request_timeout_s; an external one gets max_concurrency.
        self.capacity = {
            s.name: self.max_concurrency
            if s.url
            else min(self.max_concurrency, capacity(s.kind or "", self.local_options.get(s.kind or "")))
            for s in self.specs
        }
        self._slots = {name: threading.BoundedSemaphore(n) for name, n in self.capacity.items()}
        self._local: list[LocalServerProcess] = []
        self._pool: ThreadPoolExecutor | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> GymRewardClient:
        """Start the local servers and health-check every server; raises UserError listing those that are down."""
        if self._pool is not None:
            return self
        try:
            for spec in self.specs:
                if spec.url is None:
                    self._local.append(
                        LocalServerProcess(spec.name, spec.kind or "", self.local_options.get(spec.kind or "")).spawn()
                    )
            for server in self._local:
                self.urls[server.name] = server.wait_ready(self.startup_timeout_s)
            self._pool = ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="rlvr-gym-verify")
            with ThreadPoolExecutor(len(self.specs)) as probes:
                down = {
                    name: reason
                    for name, reason in zip(self.urls, probes.map(self._health_with_retries, self.urls.values()))
                    if reason
                }
            if down:
                lines = "\n".join(f"  - {name} ({self.urls[name]}): {reason}" for name, reason in down.items())
                raise UserError(
                    f"NeMo-Gym resource server(s) not reachable:\n{lines}\nStart them or fix "
                    "env.nemo_gym.resource_servers.<name>.url (null starts a local one)."
                )
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop the request threads and the local servers; safe to call twice."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        while self._local:
            self._local.pop().close()

    def __enter__(self) -> GymRewardClient:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _probe(self, url: str) -> str | None:
        """``None`` when the server at ``url`` is alive, else why not."""
        path = HEALTH_PATH
        while True:
            try:
                reply = request_json("GET", url, path, timeout_s=self.health_timeout_s)
            except TransportError as exc:
                return f"GET {path}: {exc}"
            verdict = health_verdict(path, reply.status)
            if verdict is None:
                path = LEGACY_HEALTH_PATH
                continue
            return None if verdict else f"GET {path} answered HTTP {reply.status}: {reply.text[:200]}"

    def _health_with_retries(self, url: str) -> str | None:
        reason = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self._backoff(attempt))
            reason = self._probe(url)
            if reason is None:
                return None
        return f"{reason} (after {self.max_retries + 1} attempts)"

    def _backoff(self, attempt: int) -> float:
        return min(_MAX_BACKOFF_S, self.backoff_s * 2 ** (attempt - 1))

    # -- scoring ---------------------------------------------------------------------------------------------

    def score(
        self, rows: Sequence[Mapping[str, Any]], responses: Sequence[str]
    ) -> tuple[list[float], dict[str, float]]:
        """Rewards of ``responses[i]`` for ``rows[i]`` (canonical nemo_gym rows), and the batch's metrics."""
        scored = self.score_detailed(rows, responses)
        return scored.rewards, scored.metrics

    def score_detailed(
        self, rows: Sequence[Mapping[str, Any]], responses: Sequence[str], *, incomplete: Sequence[bool] | None = None
    ) -> GymScore:
        """:meth:`score` with every row's :class:`VerifyResult` and ``mask_sample`` flag.

        ``incomplete[i]`` marks a generation cut at the token limit (sent as an ``incomplete`` response).
        """
        if self._pool is None:
            raise RuntimeError("GymRewardClient.start() must be called before score()")
        if len(rows) != len(responses) or (incomplete is not None and len(incomplete) != len(rows)):
            raise ValueError(f"score needs one response per row; got {len(rows)} rows and {len(responses)} responses")
        requests = []
        for i, (row, text) in enumerate(zip(rows, responses)):
            if not isinstance(text, str):
                raise TypeError(f"response {i} must be a string, got {type(text).__name__}")
            gym = gym_row_of(row, i)
            server = self.router.server_for(agent_of(gym, i))
            response = build_response(
                text,
                gym["responses_create_params"],
                model=self.model_name,
                thinking_tags=self.thinking_tags,
                incomplete=bool(incomplete and incomplete[i]),
            )
            requests.append((server, build_verify_request(gym, response)))
        abort = threading.Event()
        futures = [self._pool.submit(self._verify, server, i, body, abort) for i, (server, body) in enumerate(requests)]
        outcomes = self._gather(futures, abort)
        results = [result for result, _, _ in outcomes]
        servers = [server for server, _ in requests]
        return GymScore(
            [r.reward for r in results],
            [r.mask_sample for r in results],
            results,
            servers,
            _metrics(results, servers, outcomes),
        )

    @staticmethod
    def _gather(futures: list[Future], abort: threading.Event) -> list[tuple[VerifyResult, int, float]]:
        """Results in row order; the first failure stops the rest of the batch (no more retries) and is raised."""
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
        finally:
            failed = [f for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
            if len(failed) or not all(f.done() for f in futures):  # a failure, or interrupted while waiting
                abort.set()
                for future in futures:
                    future.cancel()
        real = [f.exception() for f in failed if not isinstance(f.exception(), _BatchAborted)]
        if real:
            raise real[0]
        return [future.result() for future in futures]

    def _verify(self, server: str, index: int, body: dict, abort: threading.Event) -> tuple[VerifyResult, int, float]:
        """``(result, retries, seconds of the last attempt)`` of one ``/verify`` call (see the module docstring)."""
        url = self.urls[server]
        where = f"NeMo-Gym resource server {server!r} ({url}{VERIFY_PATH}), row {index}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt and abort.wait(self._backoff(attempt)):
                raise _BatchAborted()
            if abort.is_set():
                raise _BatchAborted()
            reply, error, seconds = self._post(server, url, body)
            if reply is None:
                last = error
                continue
            if reply.status == 200:
                try:
                    return parse_verify_response(reply.json, body), attempt, seconds
                except ProtocolError as exc:
                    raise UserError(f"{where}: invalid /verify answer ({exc}): {reply.text[:300]}") from None
            last = f"HTTP {reply.status}: {reply.text[:500]}"
            if reply.status < 500 and reply.status not in _RETRYABLE_STATUS:
                raise UserError(
                    f"{where}: request rejected with {last}. The row lacks what this server needs: "
                    "check the row's server fields and its agent_ref / the agent_to_server mapping"
                )
        raise UserError(
            f"{where}: failed after {self.max_retries + 1} attempts (env.nemo_gym.max_retries="
            f"{self.max_retries}, request_timeout_s={self.request_timeout_s:g}); last error: {last}."
            f"{self._local_state(server)} Check that the server is up and its log; raise max_retries or "
            "request_timeout_s if it is only overloaded"
        )

    def _post(self, server: str, url: str, body: dict) -> tuple[HttpReply | None, str, float]:
        """One attempt, holding one of ``server``'s slots: ``(reply or None, transport error, seconds)``."""
        with self._slots[server]:
            start = time.monotonic()
            try:
                reply = request_json("POST", url, VERIFY_PATH, body, timeout_s=self.request_timeout_s)
            except TransportError as exc:
                return None, str(exc), time.monotonic() - start
            return reply, "", time.monotonic() - start

    def _local_state(self, server: str) -> str:
        """`` The local server process exited with code N.`` when ``server`` is ours and has died, else ``""``."""
        code = next((p.exit_code() for p in self._local if p.name == server), None)
        return "" if code is None else f" The local server process exited with code {code} (its log is above)."


def _metrics(
    results: list[VerifyResult], servers: list[str], outcomes: list[tuple[Any, int, float]]
) -> dict[str, float]:
    """Batch metrics: requests, retries, latency, masked samples, failures by kind, mean reward per server."""
    seconds = [elapsed for _, _, elapsed in outcomes]
    metrics = {
        "gym/requests": float(len(results)),
        "gym/retries": float(sum(retries for _, retries, _ in outcomes)),
        "gym/masked": float(sum(r.mask_sample for r in results)),
        "gym/request_s/mean": sum(seconds) / len(seconds) if seconds else 0.0,
        "gym/request_s/max": max(seconds, default=0.0),
    }
    failures = Counter(r.failure_kind for r in results if r.failure_kind)
    metrics["gym/failures"] = float(sum(failures.values()))
    for kind, count in failures.items():
        metrics[f"gym/failure/{kind.replace(':', '/')}"] = float(count)
    for server in sorted(set(servers)):
        rewards = [r.reward for r, s in zip(results, servers) if s == server]
        metrics[f"gym/{server}/reward_mean"] = sum(rewards) / len(rewards)
        metrics[f"gym/{server}/count"] = float(len(rewards))
    return metrics
