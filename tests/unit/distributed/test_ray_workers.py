"""RayGenerationWorker gives what its in-process counterpart gives for the same inputs."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
from dp_helpers import build_model, build_tokenizer
from torch.testing import assert_close

from rlvr.generation import GenerationConfig
from rlvr.generation.hf import HFGenerationBackend

pytestmark = pytest.mark.slow
PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [4], [14, 15, 16, 17]]
SAMPLING = GenerationConfig(max_new_tokens=8, temperature=0.7, top_k=8, top_p=0.95)


def test_generation_worker_samples_and_refits_like_the_local_backend(ray_cluster):
    """Same seed → the same tokens (and logprobs to 1e-5) as HFGenerationBackend in this process; after
    update_weights(other model's state), the same as a local backend over that other model."""
    from rlvr.distributed.actors import RayGenerationWorker

    tokenizer = build_tokenizer()
    # A partial of deepcopy carries the model by value: the actor need not import this test module.
    worker = RayGenerationWorker(
        functools.partial(copy.deepcopy, build_model(seed=0)), tokenizer, batch_size=3, num_cpus=1, num_gpus=0
    )
    try:
        for seed, weights in ((0, None), (3, build_model(seed=1))):
            if weights is not None:
                worker.update_weights(weights.state_dict())
            local = HFGenerationBackend(weights or build_model(seed=0), tokenizer, batch_size=3)
            expected = local.generate(PROMPTS, SAMPLING, seed=seed)
            got = worker.generate(PROMPTS, SAMPLING, seed=seed)
            assert [o.token_ids for o in got] == [o.token_ids for o in expected]
            # The actor runs 1 CPU thread, this process 2: BLAS sums in another order (measured diffs ~1e-6).
            for a, b in zip(got, expected):
                assert_close(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5, rtol=1e-5)
            assert [o.text for o in got] == [o.text for o in expected]
    finally:
        worker.close()


def test_generation_replicas_spread_prompts_and_refit_every_replica(ray_cluster):
    """Two replicas: prompts cut into contiguous chunks, replica i sampling its chunk with seed + i, give exactly
    the tokens of local backends on those chunks; after one update_weights both replicas sample the new model."""
    from rlvr.distributed.actors import GenerationReplicas, RayGenerationWorker

    tokenizer = build_tokenizer()
    replicas = GenerationReplicas(
        [
            RayGenerationWorker(
                functools.partial(copy.deepcopy, build_model(seed=0)), tokenizer, batch_size=2, num_cpus=0, num_gpus=0
            )
            for _ in range(2)
        ]
    )
    chunks = (PROMPTS[: -(-len(PROMPTS) // 2)], PROMPTS[-(-len(PROMPTS) // 2) :])
    try:
        for seed, weights in ((0, None), (5, build_model(seed=1))):
            if weights is not None:
                replicas.update_weights(weights.state_dict())
            local = HFGenerationBackend(weights or build_model(seed=0), tokenizer, batch_size=2)
            expected = [o for i, chunk in enumerate(chunks) for o in local.generate(chunk, SAMPLING, seed=seed + i)]
            got = replicas.generate(PROMPTS, SAMPLING, seed=seed)
            assert [o.token_ids for o in got] == [o.token_ids for o in expected]
    finally:
        replicas.close()
