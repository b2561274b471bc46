"""GenerationConfig from the policy.generation keys, the output record and the backend registry."""

from __future__ import annotations

import importlib.util
import pickle

import pytest

from rlvr.errors import ConfigError, UserError
from rlvr.generation import (
    GenerationBackend,
    GenerationConfig,
    GenerationOutput,
    base,
    generation_backend_names,
    make_generation_backend,
    register_generation_backend,
    resolve_generation_backend,
)
from rlvr.generation.hf import HFGenerationBackend, find_stop_string


def test_from_config_reads_upstream_keys_and_ignores_the_rest():
    """The vLLM-style keys map one to one; top_k -1 and nulls mean 'off'; backend/vllm_cfg are not ours."""
    cfg = GenerationConfig.from_config(
        {
            "backend": "vllm",
            "max_new_tokens": 16,
            "temperature": 0.7,
            "top_p": 0.9,
            "top_k": -1,
            "stop_token_ids": None,
            "stop_strings": ["</answer>"],
            "vllm_cfg": {"async_engine": False},
        }
    )
    assert cfg == GenerationConfig(
        max_new_tokens=16, temperature=0.7, top_p=0.9, top_k=None, stop_token_ids=None, stop_strings=("</answer>",)
    )
    defaults = GenerationConfig.from_config({"max_new_tokens": 4, "temperature": None, "top_p": None})
    assert (defaults.temperature, defaults.top_p, defaults.top_k) == (1.0, 1.0, None)


def test_validation_sampling_keys_override_when_present():
    """validation=True uses val_temperature/val_top_p/val_top_k when set and falls back when absent/null."""
    gen = {
        "max_new_tokens": 8,
        "temperature": 1.0,
        "top_p": 0.95,
        "top_k": 20,
        "val_temperature": 0.5,
        "val_top_p": None,
    }
    cfg = GenerationConfig.from_config(gen, validation=True)
    assert (cfg.temperature, cfg.top_p, cfg.top_k) == (0.5, 0.95, 20)
    assert GenerationConfig.from_config(gen).temperature == 1.0


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": 4, "temperature": 0.0}, "temperature"),
        ({"max_new_tokens": 4, "top_p": 1.5}, "top_p"),
        ({"max_new_tokens": 4, "stop_strings": [""]}, "stop_strings"),
        ({"temperature": 1.0}, "max_new_tokens"),
    ],
)
def test_invalid_values_name_the_key(bad, key):
    """Each invalid setting raises ConfigError that names policy.generation.<key>."""
    with pytest.raises(ConfigError, match=f"policy.generation.{key}"):
        GenerationConfig.from_config(bad)


def test_stop_ids_are_eos_plus_configured():
    """null stop_token_ids -> {eos}; configured ids are added to EOS (vLLM always stops at EOS)."""
    assert GenerationConfig(max_new_tokens=1).resolved_stop_token_ids(2) == {2}
    assert GenerationConfig(max_new_tokens=1, stop_token_ids=[7, 9]).resolved_stop_token_ids([2, 3]) == {2, 3, 7, 9}


def test_output_pickles_round_trip():
    """Outputs cross process boundaries (Ray): pickling preserves every field."""
    out = GenerationOutput(token_ids=[4, 5, 1], logprobs=[-0.5, -0.25, 0.0], text="12", truncated=False)
    assert pickle.loads(pickle.dumps(out)) == out
    cfg = GenerationConfig(max_new_tokens=3, stop_strings=["x"])
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_registry_resolves_hf_and_rejects_unknown_names():
    """'hf' resolves to the HF backend; an unknown name fails with the known names listed."""
    assert resolve_generation_backend("hf") is HFGenerationBackend
    assert {"hf", "vllm"} <= set(generation_backend_names())
    with pytest.raises(ConfigError, match=r"unknown backend 'sglang'.*'hf'.*'vllm'"):
        resolve_generation_backend("sglang")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_without_vllm_installed_says_how_to_fix():
    """Asking for vllm on a machine without it is a UserError pointing at the gpu extra and backend: hf."""
    with pytest.raises(UserError, match=r"needs the 'vllm' package.*rlvr\[gpu\].*backend: hf"):
        resolve_generation_backend("vllm")


def test_registered_factory_is_called_with_arguments(model, tokenizer, monkeypatch):
    """register_generation_backend adds a name; make_generation_backend passes arguments through."""
    monkeypatch.setattr(base, "_BACKENDS", dict(base._BACKENDS))  # keep the registration local to this test
    register_generation_backend("hf-test", lambda m, t, **kw: HFGenerationBackend(m, t, **kw))
    backend = make_generation_backend("hf-test", model, tokenizer, batch_size=3)
    assert isinstance(backend, GenerationBackend) and backend.batch_size == 3


def test_find_stop_string_takes_the_earliest_match():
    """The earliest occurrence wins (end index returned); at the same start the longer string wins."""
    assert find_stop_string("abcdcd", ["cd", "bc"]) == 3
    assert find_stop_string("abcd", ["ab", "abc"]) == 3
    assert find_stop_string("abcd", ["x"]) is None
