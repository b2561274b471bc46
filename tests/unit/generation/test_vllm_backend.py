"""The vLLM backend: its mapping to and from vLLM (with a recording fake engine) and, on a GPU, the real engine
against the HF backend (same processed log-probs for the same sampled tokens, refit changes the samples)."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch

from rlvr.generation import GenerationConfig
from rlvr.generation.base import resolve_generation_backend
from rlvr.generation.vllm import VLLMGenerationBackend, engine_kwargs, sampling_kwargs, to_generation_output
from tests.unit.schema_config import policy_config

EOS = 1


def vllm_cfg(**keys) -> dict:
    """``policy.generation.vllm_cfg``: ``keys`` over the schema's defaults."""
    return policy_config(generation={"vllm_cfg": keys})["generation"]["vllm_cfg"]


class FakeEngine:
    """Records what the backend asks of ``vllm.LLM`` and answers like it: per prompt, ``len(prompt)`` tokens of
    id 5 (log-prob -0.5 each), then EOS, unless ``max_tokens`` runs out first (finish_reason "length")."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.calls, self.rpcs, self.resets = [], [], 0
        self.folder_files = sorted(p.name for p in Path(kwargs["model"]).iterdir())

    def generate(self, prompts, sampling_params, use_tqdm):
        self.calls.append((prompts, sampling_params))
        results = []
        for prompt, params in zip(prompts, sampling_params):
            want = [5] * len(prompt["prompt_token_ids"]) + [EOS]
            tokens = want[: params["max_tokens"]]
            finish = "stop" if tokens[-1] == EOS else "length"
            lps = [{t: types.SimpleNamespace(logprob=-0.5), 99: types.SimpleNamespace(logprob=-9.0)} for t in tokens]
            completion = types.SimpleNamespace(
                token_ids=tokens, logprobs=lps, text="x" * (len(tokens) - (finish == "stop")), finish_reason=finish
            )
            results.append(types.SimpleNamespace(outputs=[completion]))
        return results

    def collective_rpc(self, method, args=()):
        self.rpcs.append((method, args))

    def reset_prefix_cache(self):
        self.resets += 1

    def sleep(self, level):
        self.rpcs.append(("sleep", level))

    def wake_up(self):
        self.rpcs.append(("wake_up", None))


@pytest.fixture
def fake_backend(model, tokenizer):
    engines = []

    def factory(**kwargs):
        engines.append(FakeEngine(**kwargs))
        return engines[-1]

    backend = VLLMGenerationBackend(
        model,
        tokenizer,
        max_total_length=12,
        seed=3,
        vllm_cfg=vllm_cfg(precision="bfloat16", gpu_memory_utilization=0.5, enforce_eager=True, max_model_len=12),
        engine_factory=factory,
        sampling_factory=lambda kw: kw,
    )
    yield backend, engines[0]
    backend.close()


def test_engine_gets_the_policy_folder_and_the_upstream_settings(fake_backend):
    backend, engine = fake_backend
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(engine.folder_files)
    kw = engine.kwargs
    assert kw["dtype"] == "bfloat16" and kw["gpu_memory_utilization"] == 0.5 and kw["enforce_eager"] is True
    assert kw["max_model_len"] == 12 and kw["seed"] == 3
    assert kw["logprobs_mode"] == "processed_logprobs"
    assert kw["worker_extension_cls"] == "rlvr.generation.vllm_worker.RlvrWeightLoader"


def test_outputs_keep_order_stop_tokens_logprobs_and_truncation(fake_backend):
    backend, engine = fake_backend
    cfg = GenerationConfig(max_new_tokens=4, temperature=0.7, top_k=5, top_p=0.9)
    outs = backend.generate([[7, 7], [7, 7, 7, 7], [7] * 12], cfg, seed=10)
    assert outs[0].token_ids == [5, 5, EOS] and outs[0].logprobs == [-0.5] * 3 and not outs[0].truncated
    assert outs[1].token_ids == [5, 5, 5, 5] and outs[1].truncated  # ran out of max_new_tokens
    assert outs[2].token_ids == [] and outs[2].truncated  # prompt already at max_total_length: never sent
    prompts, params = engine.calls[0]
    assert [p["prompt_token_ids"] for p in prompts] == [[7, 7], [7, 7, 7, 7]]
    assert [p["seed"] for p in params] == [10, 11]  # seed + prompt index: reproducible per row
    assert params[0] | {"seed": 0} == {
        "n": 1,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 5,
        "max_tokens": 4,
        "logprobs": 0,
        "stop_token_ids": [],
        "include_stop_str_in_output": True,
        "skip_special_tokens": True,
        "seed": 0,
    }


def test_length_cap_and_stop_settings_reach_vllm():
    cfg = GenerationConfig(max_new_tokens=9, stop_token_ids=[4], stop_strings=["\n\n"], top_k=None)
    kw = sampling_kwargs(cfg, max_tokens=3, seed=None)
    assert kw["max_tokens"] == 3 and kw["top_k"] == -1 and kw["stop"] == ["\n\n"] and kw["stop_token_ids"] == [4]
    assert "seed" not in kw
    assert sampling_kwargs(GenerationConfig(max_new_tokens=2, greedy=True), max_tokens=2, seed=0)["temperature"] == 0


def test_refit_sends_hf_named_cpu_tensors_and_resets_the_prefix_cache(fake_backend, model):
    backend, engine = fake_backend
    backend.update_weights(model.state_dict())
    ((method, (weights,)),) = engine.rpcs
    assert method == "rlvr_load_weights" and engine.resets == 1
    assert [n for n, _ in weights] == list(model.state_dict())
    assert all(t.device.type == "cpu" for _, t in weights)


def test_a_colocated_engine_sleeps_after_generating_and_wakes_before_a_refit(model, tokenizer):
    """Sleep mode (colocated generation): the engine is built with enable_sleep_mode; finish_generation sleeps at
    level 1 once; a refit or the next generation wakes it first and resets the prefix cache (its KV blocks are
    gone). Without sleep mode (generation on devices of its own) both calls do nothing."""
    engines = []
    for sleep_mode in (True, False):
        backend = VLLMGenerationBackend(
            model,
            tokenizer,
            vllm_cfg=vllm_cfg(),
            sleep_mode=sleep_mode,
            engine_factory=lambda **kw: engines.append(FakeEngine(**kw)) or engines[-1],
            sampling_factory=lambda kw: kw,
        )
        backend.generate([[7, 7]], GenerationConfig(max_new_tokens=2), seed=0)
        backend.finish_generation()
        backend.finish_generation()
        backend.update_weights(model.state_dict())
        backend.prepare_for_generation()
        backend.close()
    asleep, apart = engines
    assert asleep.kwargs["enable_sleep_mode"] is True and apart.kwargs["enable_sleep_mode"] is False
    assert [m for m, _ in asleep.rpcs] == ["sleep", "wake_up", "rlvr_load_weights"] and asleep.rpcs[0][1] == 1
    assert asleep.resets == 2  # after waking, and after the refit
    assert [m for m, _ in apart.rpcs] == ["rlvr_load_weights"] and apart.resets == 1


def test_missing_logprobs_are_an_error_not_zeros():
    completion = types.SimpleNamespace(token_ids=[3, 4], logprobs=None, text="ab", finish_reason="stop")
    with pytest.raises(RuntimeError, match="log-probs"):
        to_generation_output(completion)


def test_close_removes_the_model_folder(model, tokenizer):
    engines = []
    backend = VLLMGenerationBackend(
        model, tokenizer, vllm_cfg=vllm_cfg(), engine_factory=lambda **kw: engines.append(kw) or object()
    )
    folder = Path(engines[0]["model"])
    assert folder.is_dir()
    backend.close()
    assert not folder.exists()


def test_failed_engine_start_leaves_no_folder(model, tokenizer):
    seen = []

    def broken(**kw):
        seen.append(kw["model"])
        raise RuntimeError("no GPU")

    with pytest.raises(RuntimeError, match="no GPU"):
        VLLMGenerationBackend(model, tokenizer, vllm_cfg=vllm_cfg(), engine_factory=broken)
    assert not Path(seen[0]).exists()


def test_unknown_precision_is_a_clear_error():
    with pytest.raises(Exception, match="vllm_cfg.precision"):
        engine_kwargs(vllm_cfg(precision="int3"), model_dir="/m", seed=0)


def test_the_registry_names_the_gpu_extra_without_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(Exception, match="gpu"):
            resolve_generation_backend("vllm")
    else:
        assert resolve_generation_backend("vllm") is VLLMGenerationBackend


@pytest.mark.gpu
def test_real_vllm_sleep_frees_device_memory_and_wakes_with_the_same_samples():
    """A colocated engine's sleep returns its weights and KV cache to the driver (free memory, measured with
    torch.cuda.mem_get_info, rises by at least 1 GiB at gpu_memory_utilization 0.2); after waking it samples the
    same tokens for the same seed."""
    pytest.importorskip("vllm")
    from tests.unit.conftest import build_model, build_tokenizer

    backend = VLLMGenerationBackend(
        build_model(seed=0, init_range=0.2),
        build_tokenizer(),
        max_total_length=64,
        seed=0,
        sleep_mode=True,
        vllm_cfg=vllm_cfg(precision="float32", gpu_memory_utilization=0.2, enforce_eager=True, max_model_len=64),
    )
    try:
        cfg = GenerationConfig(max_new_tokens=12, temperature=0.8)
        prompts = [[5, 6, 7], [8, 9, 10, 11]] * 4
        outs = backend.generate(prompts, cfg, seed=1)
        awake, _ = torch.cuda.mem_get_info()
        backend.finish_generation()
        asleep, _ = torch.cuda.mem_get_info()
        assert asleep - awake >= 1 << 30, (awake, asleep)
        backend.prepare_for_generation()
        assert backend.generate(prompts, cfg, seed=1) == outs
    finally:
        backend.close()


@pytest.mark.gpu
def test_real_vllm_matches_the_hf_backend(tmp_path):
    """vLLM's processed log-probs equal the HF backend's re-score of the same tokens; a refit changes samples."""
    pytest.importorskip("vllm")
    from rlvr.policy.logprobs import token_logprobs
    from tests.unit.conftest import build_model, build_tokenizer

    model, tokenizer = build_model(seed=0, init_range=0.2), build_tokenizer()
    backend = VLLMGenerationBackend(
        model,
        tokenizer,
        max_total_length=64,
        seed=0,
        vllm_cfg=vllm_cfg(precision="float32", gpu_memory_utilization=0.2, enforce_eager=True, max_model_len=64),
    )
    try:
        cfg = GenerationConfig(max_new_tokens=12, temperature=0.8, top_k=8, top_p=0.95)
        prompts = [[5, 6, 7], [8, 9, 10, 11], [4]] * 4
        outs = backend.generate(prompts, cfg, seed=1)
        assert outs == backend.generate(prompts, cfg, seed=1)
        for prompt, out in zip(prompts, outs):
            ids = torch.tensor([prompt + out.token_ids])
            with torch.no_grad():
                logits = model(input_ids=ids).logits
            ref = token_logprobs(logits, ids, temperature=0.8, top_k=8, top_p=0.95)[0, len(prompt) :]
            torch.testing.assert_close(torch.tensor(out.logprobs), ref, atol=2e-3, rtol=0)
        other = build_model(seed=5, init_range=0.2)
        backend.update_weights(other.state_dict())
        assert backend.generate(prompts, cfg, seed=1) != outs
        (tmp_path / "ok.json").write_text(json.dumps(len(outs)))
    finally:
        backend.close()
