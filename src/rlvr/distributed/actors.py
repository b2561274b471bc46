"""The generation worker as a Ray actor, behind the same methods as its in-process counterpart.

:class:`RayGenerationWorker` is a :class:`~rlvr.generation.base.GenerationBackend` (``generate``,
``update_weights``) whose :class:`~rlvr.generation.hf.HFGenerationBackend` lives in an actor with its own copy of
the model; the controller refits it from the trainer's weights (``RayPolicyGroup.hf_state_dict()``) before a
generation. Inputs and outputs are plain picklable values, so results equal the in-process ones for the same
model and seed. (Rewards are scored in the driver process: its verifier pool already runs in subprocesses.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from rlvr.distributed.runtime import ModelSource, build_model, ensure_ray, load_tokenizer, resolve_gpus, shared_slot
from rlvr.generation.base import GenerationConfig, GenerationOutput


class GenerationActor:
    """Runs inside a Ray actor: the named generation backend (``hf`` or ``vllm``) over its own model copy."""

    def __init__(
        self, source: ModelSource, precision: str | None, tokenizer: Any, device: str, backend: str, options: dict
    ):
        from rlvr.generation.base import make_generation_backend

        self.backend = make_generation_backend(
            backend, build_model(source, precision, device), load_tokenizer(tokenizer), **options
        )

    def generate(
        self, prompt_token_ids: list[list[int]], cfg: GenerationConfig, seed: int | None
    ) -> list[GenerationOutput]:
        return self.backend.generate(prompt_token_ids, cfg, seed=seed)

    def update_weights(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        self.backend.update_weights(state_dict)

    def prepare_for_generation(self) -> None:
        self.backend.prepare_for_generation()

    def finish_generation(self) -> None:
        self.backend.finish_generation()


class RayGenerationWorker:
    """A generation backend in a Ray actor. ``source``/``precision`` as for :class:`~rlvr.distributed.RayPolicyGroup`;
    ``tokenizer`` an object or a tokenizer folder; ``backend`` a registered generation backend (default ``hf``)
    and ``options`` its keyword arguments (``batch_size``, ``max_total_length``, ``vllm_cfg``, ...).

    Where it runs (:mod:`rlvr.launch.placement`): ``device_slot=(group, i)`` shares bundle ``i`` of a policy
    group's device group (colocated generation); without one it takes a GPU of its own when the cluster has GPUs.
    """

    def __init__(
        self,
        source: ModelSource,
        tokenizer: Any,
        *,
        precision: str | None = None,
        backend: str = "hf",
        num_cpus: float = 1,
        num_gpus: float | None = None,
        device_slot: tuple[Any, int] | None = None,
        **options: Any,
    ):
        import ray

        ensure_ray()
        placement = shared_slot(*device_slot) if device_slot is not None and device_slot[0] is not None else None
        if placement is None:
            placement = {"num_cpus": num_cpus, "num_gpus": resolve_gpus(num_gpus)}
        actor_cls = ray.remote(GenerationActor).options(**placement)
        device = "cuda" if placement["num_gpus"] > 0 else "cpu"
        self.actor = actor_cls.remote(source, precision, tokenizer, device, backend, options)

    def generate(
        self, prompt_token_ids: list[list[int]], cfg: GenerationConfig, *, seed: int | None = None
    ) -> list[GenerationOutput]:
        import ray

        return ray.get(self.actor.generate.remote(prompt_token_ids, cfg, seed))

    def update_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Refit the actor's model in place (strict names, as HFGenerationBackend)."""
        import ray

        ray.get(self.actor.update_weights.remote(dict(state_dict)))

    def prepare_for_generation(self) -> None:
        import ray

        ray.get(self.actor.prepare_for_generation.remote())

    def finish_generation(self) -> None:
        import ray

        ray.get(self.actor.finish_generation.remote())

    def close(self) -> None:
        import ray

        ray.kill(self.actor)


class GenerationReplicas:
    """One generation engine per device behind one backend's interface: prompts are cut into contiguous chunks,
    one per replica, generated in parallel and concatenated in order; a refit reaches every replica.

    Replica ``i`` samples with ``seed + i``, so a run is reproducible for a given number of replicas (a different
    count draws other, equally distributed samples).
    """

    def __init__(self, workers: Sequence[RayGenerationWorker]):
        if not workers:
            raise ValueError("GenerationReplicas needs at least one worker")
        self.workers = list(workers)

    def generate(
        self, prompt_token_ids: list[list[int]], cfg: GenerationConfig, *, seed: int | None = None
    ) -> list[GenerationOutput]:
        import ray

        bounds = torch.arange(len(prompt_token_ids)).tensor_split(len(self.workers))
        refs = [
            worker.actor.generate.remote(
                prompt_token_ids[int(idx[0]) : int(idx[-1]) + 1], cfg, None if seed is None else seed + i
            )
            for i, (worker, idx) in enumerate(zip(self.workers, bounds))
            if len(idx)
        ]
        return [output for chunk in ray.get(refs) for output in chunk]

    def update_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Refit every replica from one copy of the weights in Ray's object store."""
        import ray

        ref = ray.put(dict(state_dict))
        ray.get([worker.actor.update_weights.remote(ref) for worker in self.workers])

    def prepare_for_generation(self) -> None:
        import ray

        ray.get([worker.actor.prepare_for_generation.remote() for worker in self.workers])

    def finish_generation(self) -> None:
        """Every replica hands its device memory back to the training rank beside it."""
        import ray

        ray.get([worker.actor.finish_generation.remote() for worker in self.workers])

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
