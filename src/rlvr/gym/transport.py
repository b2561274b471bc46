"""One HTTP exchange with a resource server, over the standard library (``http.client``), JSON in and out.

Why not ``urllib.request``: it honours ``http_proxy`` from the environment, which would send loopback traffic to
a proxy on machines that set one. Here every request opens its own connection straight to the server (no proxy,
no keep-alive), so threads never share a socket and a broken connection never outlives its request.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit


class TransportError(OSError):
    """The exchange did not complete: refused, reset, timed out, or the URL cannot be used."""


@dataclass(frozen=True)
class HttpReply:
    """An HTTP answer: ``status``, the raw ``text`` and the decoded ``json`` (``None`` when the body is not JSON)."""

    status: int
    text: str
    json: Any


def split_base_url(url: str) -> tuple[str, str, int, str]:
    """``(scheme, host, port, path prefix)`` of a server base URL such as ``http://10.0.0.5:8000``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) base URL: {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError(f"bad port in URL {url!r}: {exc}") from None
    return parts.scheme, parts.hostname, port, parts.path.rstrip("/")


def request_json(method: str, base_url: str, path: str, body: Any = None, *, timeout_s: float) -> HttpReply:
    """Send ``method base_url+path`` (``body`` as JSON when given) and read the whole answer within ``timeout_s``.

    Any HTTP status is returned (the caller decides what is an error); failures to exchange at all raise
    :class:`TransportError` with the cause in its message.
    """
    scheme, host, port, prefix = split_base_url(base_url)
    connection_class = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    connection = connection_class(host, port, timeout=timeout_s)
    payload = None if body is None else json.dumps(body, ensure_ascii=False).encode("utf-8")
    headers = {"Accept": "application/json", "Connection": "close"}
    if payload is not None:
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, prefix + path, body=payload, headers=headers)
        reply = connection.getresponse()
        raw = reply.read()
    except TimeoutError as exc:
        raise TransportError(f"timed out after {timeout_s:g} s ({exc or type(exc).__name__})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise TransportError(f"{type(exc).__name__}: {exc}") from None
    finally:
        connection.close()
    text = raw.decode("utf-8", errors="replace")
    try:
        decoded = json.loads(text) if text else None
    except json.JSONDecodeError:
        decoded = None
    return HttpReply(reply.status, text, decoded)
