"""Our NeMo-Gym resource servers: ``/verify`` over HTTP on loopback, for kind ``math`` or ``code``.

Routes (the Gym resource-server protocol, see :mod:`rlvr.gym.protocol`):

* ``POST /verify`` — score one sample (:mod:`rlvr.gym.verifiers`); 200 with the echoed request plus ``reward``,
  ``mask_sample``, ``failure_kind``, ``failure_reason``; 422 ``{"detail"}`` for a malformed request; 500
  ``{"detail"}`` when the server itself failed (the client retries, then fails the run: never a silent 0).
* ``POST /seed_session`` — ``{}``: our servers are stateless; answered so that Gym agents can use them too.
* ``GET /health`` (and ``/``) — ``{"status": "ok", "kind": ...}``.

Two ways to run one: :class:`ResourceServer` serves from a thread of the current process (tests, tools), and
:class:`LocalServerProcess` starts ``python -m rlvr.gym`` (:mod:`rlvr.gym.__main__`) as a child process bound to
``127.0.0.1`` on an ephemeral port; the child reports its URL through a ready file and exits with its parent (it
polls the parent's pid), so a killed trainer leaves no server behind. The stdlib ``ThreadingHTTPServer`` serves
one thread per request; the verifier bounds the real work (math: the worker pool; code: the sandbox's slots).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import rlvr
from rlvr.errors import UserError
from rlvr.gym.protocol import HEALTH_PATH, LEGACY_HEALTH_PATH, SEED_SESSION_PATH, VERIFY_PATH, build_verify_response
from rlvr.gym.verifiers import RequestError, make_verifier

_LIVENESS_PATHS = (HEALTH_PATH, LEGACY_HEALTH_PATH, "/healthz", "/livez", "/readyz")


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silence the per-request access log; failures are printed by :meth:`_fail`."""

    def _send(self, status: int, body: Any) -> None:
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        if self.path in _LIVENESS_PATHS:
            self._send(200, {"status": "ok", "kind": self.server.verifier.kind})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        if self.path not in (VERIFY_PATH, SEED_SESSION_PATH):
            self._send(404, {"detail": "Not Found"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            request = json.loads(self.rfile.read(length) or b"null")
        except (ValueError, UnicodeDecodeError) as exc:
            self._send(422, {"detail": f"request body is not JSON: {exc}"})
            return
        if not isinstance(request, dict):
            self._send(422, {"detail": "request body must be a JSON object"})
            return
        if self.path == SEED_SESSION_PATH:
            self._send(200, {})
            return
        try:
            result = self.server.verifier.verify(request)
        except RequestError as exc:
            self._send(422, {"detail": str(exc)})
        except Exception as exc:  # noqa: BLE001 - answered as a 500 so that the client retries or fails loudly
            self._fail(exc)
        else:
            self._send(200, build_verify_response(request, result))

    def _fail(self, exc: Exception) -> None:
        print(
            f"rlvr gym server ({self.server.verifier.kind}): /verify failed:\n{traceback.format_exc()}",
            file=sys.stderr,
            flush=True,
        )
        self._send(500, {"detail": f"{type(exc).__name__}: {exc}"})


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # The stdlib default backlog (5) makes bursts of concurrent clients wait for SYN retransmits (1 s and more).
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], verifier: Any) -> None:
        self.verifier = verifier
        super().__init__(address, _Handler)


class ResourceServer:
    """A resource server of ``kind`` served from a background thread; use as a context manager.

    ``options`` are the verifier's keyword arguments (:func:`rlvr.gym.verifiers.make_verifier`).
    """

    def __init__(self, kind: str, options: Mapping[str, Any] | None = None, host: str = "127.0.0.1", port: int = 0):
        self.verifier = make_verifier(kind, options)
        try:
            self._httpd = _HTTPServer((host, port), self.verifier)
        except BaseException:
            self.verifier.close()
            raise
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ResourceServer:
        """Serve from a daemon thread; returns at once."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"rlvr-gym-{self.verifier.kind}",
            daemon=True,
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from the calling thread until interrupted (SIGTERM/SIGINT), then close."""
        try:
            self._httpd.serve_forever(poll_interval=0.1)
        finally:
            self.close()

    def close(self) -> None:
        """Stop serving and release the verifier (worker processes, sandbox folder)."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()
        self.verifier.close()

    def __enter__(self) -> ResourceServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LocalServerProcess:
    """``python -m rlvr.gym`` as a child process on ``127.0.0.1`` (ephemeral port).

    :meth:`spawn` returns at once; :meth:`wait_ready` blocks until the child wrote its URL, so that several servers
    can start side by side. ``name`` is the configured server name, used in error messages.
    """

    def __init__(self, name: str, kind: str, options: Mapping[str, Any] | None = None) -> None:
        self.name, self.kind, self.options = name, kind, dict(options or {})
        self.url: str | None = None
        self._proc: subprocess.Popen | None = None
        self._ready_dir = Path(tempfile.mkdtemp(prefix="rlvr-gym-"))

    def spawn(self) -> LocalServerProcess:
        src_dir = str(Path(rlvr.__file__).resolve().parents[1])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (src_dir, env.get("PYTHONPATH")) if p)
        command = [
            sys.executable,
            "-m",
            "rlvr.gym",
            "--kind",
            self.kind,
            "--options",
            json.dumps(self.options),
            "--ready-file",
            str(self._ready_dir / "ready.json"),
            "--parent-pid",
            str(os.getpid()),
        ]
        self._proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)
        return self

    def wait_ready(self, timeout_s: float) -> str:
        """The server's base URL once it listens; a child that dies or stays silent is a :class:`UserError`."""
        assert self._proc is not None, "spawn() first"
        ready = self._ready_dir / "ready.json"
        deadline = time.monotonic() + timeout_s
        while not ready.exists():
            code = self._proc.poll()
            if code is not None:
                raise UserError(
                    f"local NeMo-Gym resource server {self.name!r} (kind {self.kind}) exited with code "
                    f"{code} before it was ready; its error output is above"
                )
            if time.monotonic() > deadline:
                self.close()
                raise UserError(
                    f"local NeMo-Gym resource server {self.name!r} (kind {self.kind}) was not ready "
                    f"within {timeout_s:g} s; the machine may be overloaded"
                )
            time.sleep(0.05)
        self.url = json.loads(ready.read_text())["url"]
        return self.url

    def exit_code(self) -> int | None:
        """The child's exit status once it ended, else ``None``."""
        return None if self._proc is None else self._proc.poll()

    def close(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after 10 s) and remove its ready folder."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        for leftover in self._ready_dir.glob("*"):
            leftover.unlink()
        self._ready_dir.rmdir()
