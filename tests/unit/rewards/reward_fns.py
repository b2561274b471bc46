"""Reward functions for the tests, imported by the verifier workers as ``tests.unit.rewards.reward_fns:<name>``."""

from __future__ import annotations

import time


def exact(prompts, responses, rows):
    """1.0 when the response is the ground truth exactly (after stripping)."""
    return [1.0 if r.strip() == row["ground_truth"] else 0.0 for r, row in zip(responses, rows)]


def prompt_length(prompts, responses, rows, *, scale=1.0):
    """Reads the prompt and a keyword argument: len(prompt) * scale."""
    return [len(p) * scale for p in prompts]


def raises(prompts, responses, rows):
    raise ValueError("my reward has a bug")


def hangs(prompts, responses, rows):
    time.sleep(60)
    return [1.0]


def two_values(prompts, responses, rows):
    return [1.0, 1.0]


def a_word(prompts, responses, rows):
    return ["good"]


def not_a_list(prompts, responses, rows):
    return 1.0


def nan(prompts, responses, rows):
    return [float("nan")]


NOT_CALLABLE = 3
