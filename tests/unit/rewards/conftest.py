"""One reward scorer (2 worker processes) shared by the reward tests, closed at the end of the session."""

from __future__ import annotations

import pytest

from rlvr.rewards.scorer import RewardScorer


@pytest.fixture(scope="session")
def scorer():
    with RewardScorer(num_workers=2, timeout_s=5.0, sandbox_concurrency=4) as shared:
        yield shared
