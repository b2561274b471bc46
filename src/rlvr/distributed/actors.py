"""The generation worker as a Ray actor, behind the same methods as its in-process counterpart.

:class:`RayGenerationWorker` is a :class:`~rlvr.generation.base.GenerationBackend` (``generate``,
``update_weights``) whose :class:`~rlvr.generation.hf.HFGenerationBackend` lives in an actor with its own copy of
the model; the controller refits it from the trainer's weights (``RayPolicyGroup.hf_state_dict()``) before a
generation. Inputs and outputs are plain picklable values, so results equal the in-process ones for the same
model and seed. (Rewards are scored in the driver process: its verifier pool already runs in subprocesses.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from rlvr.distributed.runtime import ModelSource, build_model, ensure_ray, load_tokenizer, resolve_gpus
from rlvr.generation.base import GenerationConfig, GenerationOutput


class GenerationActor:
    """Runs inside a Ray actor: an HFGenerationBackend over its own model copy."""

    def __init__(
        self,
        source: ModelSource,
        precision: str | None,
        tokenizer: Any,
        device: str,
        batch_size: int | None,
        max_total_length: int | None,
    ):
        from rlvr.generation.hf import HFGenerationBackend

        self.backend = HFGenerationBackend(
            build_model(source, precision, device),
            load_tokenizer(tokenizer),
            batch_size=batch_size,
            max_total_length=max_total_length,
        )

    def generate(
        self, prompt_token_ids: list[list[int]], cfg: GenerationConfig, seed: int | None
    ) -> list[GenerationOutput]:
        return self.backend.generate(prompt_token_ids, cfg, seed=seed)

    def update_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        self.backend.update_weights(state_dict)


class RayGenerationWorker:
    """HF sampling in a Ray actor. ``source``/``precision`` as for :class:`~rlvr.distributed.RayPolicyGroup`;
    ``tokenizer`` an object or a tokenizer folder; ``batch_size``/``max_total_length`` as HFGenerationBackend."""

    def __init__(
        self,
        source: ModelSource,
        tokenizer: Any,
        *,
        precision: str | None = None,
        batch_size: int | None = None,
        max_total_length: int | None = None,
        num_cpus: float = 1,
        num_gpus: float | None = None,
    ):
        import ray

        ensure_ray()
        gpus = resolve_gpus(num_gpus)
        actor_cls = ray.remote(GenerationActor).options(num_cpus=num_cpus, num_gpus=gpus)
        self.actor = actor_cls.remote(
            source, precision, tokenizer, "cuda" if gpus > 0 else "cpu", batch_size, max_total_length
        )

    def generate(
        self, prompt_token_ids: list[list[int]], cfg: GenerationConfig, *, seed: int | None = None
    ) -> list[GenerationOutput]:
        import ray

        return ray.get(self.actor.generate.remote(prompt_token_ids, cfg, seed))

    def update_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Refit the actor's model in place (strict names, as HFGenerationBackend)."""
        import ray

        ray.get(self.actor.update_weights.remote(dict(state_dict)))

    def close(self) -> None:
        import ray

        ray.kill(self.actor)
