"""Lepton tests: a temporary HOME and LEPTON_CACHE_DIR (no real `lep login` record is ever read) and a fake
workspace on loopback that the real leptonai client talks to."""

from __future__ import annotations

import os

import pytest

from tests.lepton.fake_lepton import FakeLepton

TOKEN = "test-token-0123456789"


@pytest.fixture
def lepton_env(tmp_path, monkeypatch):
    """Isolate the SDK from this machine: empty HOME and cache, no LEPTON_* or SNAKEMAKE_LEPTON_* variables."""
    home = tmp_path / "home"
    home.mkdir()
    for name in list(os.environ):
        if name.startswith(("LEPTON_", "SNAKEMAKE_LEPTON_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LEPTON_CACHE_DIR", str(home / ".cache" / "lepton"))
    return home


@pytest.fixture
def fake(lepton_env, monkeypatch):
    """A running fake workspace; LEPTON_WORKSPACE_ID/URL/TOKEN point the SDK at it."""
    with FakeLepton(token=TOKEN, home=str(lepton_env)) as server:
        monkeypatch.setenv("LEPTON_WORKSPACE_ID", server.workspace)
        monkeypatch.setenv("LEPTON_WORKSPACE_URL", server.url)
        monkeypatch.setenv("LEPTON_WORKSPACE_TOKEN", TOKEN)
        yield server
