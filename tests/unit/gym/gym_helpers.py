"""Helpers for the Gym tests: scripted fake resource servers on loopback, a closed port, and Gym rows."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# handler(method, path, body) -> (status, json body or raw text)
Script = Callable[[str, str, Any], tuple[int, Any]]


class FakeServer:
    """A loopback HTTP server answering with ``script``; records every request and the peak concurrency."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[tuple[str, str, Any]] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                with fake._lock:
                    fake.requests.append((method, self.path, body))
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    status, answer = fake.script(method, self.path, body)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1
                payload = (answer if isinstance(answer, str) else json.dumps(answer)).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 64

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def verify_posts(self) -> list[Any]:
        return [body for method, path, body in self.requests if method == "POST" and path == "/verify"]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port


def gym_row(agent: str = "math_with_judge_simple_agent", **fields: Any) -> dict[str, Any]:
    """A canonical rl_prep row of task nemo_gym whose ``gym`` object has the given server fields."""
    gym = {
        "responses_create_params": {"input": [{"role": "user", "content": "What is 1 + 1?"}]},
        "agent_ref": {"type": "responses_api_agents", "name": agent},
        **fields,
    }
    return {
        "index": 0,
        "task_name": "nemo_gym",
        "prompt": "What is 1 + 1?",
        "problem": "What is 1 + 1?",
        "source": "test:1",
        "prompt_tokens": None,
        "gym": gym,
    }


def ok_reward(reward: float = 1.0, **extra: Any) -> Script:
    """A script whose /health is fine and whose /verify answers ``reward``."""

    def script(method: str, path: str, body: Any) -> tuple[int, Any]:
        if method == "GET":
            return 200, {"status": "ok"}
        return 200, {**body, "reward": reward, **extra}

    return script
