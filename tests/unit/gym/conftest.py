"""Fixtures of the Gym tests: fake resource servers, closed after each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from gym_helpers import FakeServer, Script


@pytest.fixture
def fake_server() -> Iterator[Callable[[Script], FakeServer]]:
    """Factory of fake servers, all closed after the test."""
    servers: list[FakeServer] = []

    def make(script: Script) -> FakeServer:
        servers.append(FakeServer(script))
        return servers[-1]

    yield make
    for server in servers:
        server.close()
