"""Generation backends: sample continuations of prompts with per-token log-probs (HF here, vLLM on GPUs)."""

from rlvr.generation.base import (
    GenerationBackend,
    GenerationConfig,
    GenerationOutput,
    generation_backend_names,
    make_generation_backend,
    register_generation_backend,
    resolve_generation_backend,
)

__all__ = [
    "GenerationBackend",
    "GenerationConfig",
    "GenerationOutput",
    "generation_backend_names",
    "make_generation_backend",
    "register_generation_backend",
    "resolve_generation_backend",
]
