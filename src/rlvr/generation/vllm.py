"""vLLM generation backend (GPU machines; ``policy.generation.backend: vllm``).

The backend owns one ``vllm.LLM`` engine built from the policy's current weights: at start it writes the HF model
and tokenizer to a private temporary folder (vLLM loads models from disk), and after every training step the
controller refits it through :meth:`VLLMGenerationBackend.update_weights`, which hands the HF-named tensors to
each vLLM worker (:mod:`rlvr.generation.vllm_worker`, vLLM's ``worker_extension_cls`` hook) where the model's own
``load_weights`` re-fuses QKV and gate/up. The prefix cache is reset after a refit so that no KV computed with
old weights is reused.

Sampling follows :class:`~rlvr.generation.base.GenerationConfig` exactly as the HF backend does: temperature,
top-k, top-p, ``max_new_tokens`` capped by ``max_total_length`` (vLLM's ``max_model_len``), stop token ids (kept
in the output), stop strings (kept, ``include_stop_str_in_output``), and ``truncated`` when the sample ended by
length. The reported log-probs are those of the *processed* distribution (``logprobs_mode=processed_logprobs``),
the quantity the trainer recomputes with ``get_logprobs(filtered=True)``; a vLLM too old for that mode is refused,
since raw log-probs would silently bias every importance ratio.

Only this module and :mod:`rlvr.generation.vllm_worker` import vLLM, and only when an engine is built, so the
conversion logic below is importable and tested on machines without it (with a fake engine); the real engine
is exercised by the GPU tests.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from rlvr.errors import UserError
from rlvr.generation.base import GenerationConfig, GenerationOutput, token_budget

WORKER_EXTENSION = "rlvr.generation.vllm_worker.RlvrWeightLoader"
_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
}


def engine_kwargs(
    vllm_cfg: Mapping[str, Any], *, model_dir: str, seed: int, sleep_mode: bool = False
) -> dict[str, Any]:
    """``vllm.LLM(**kwargs)`` from ``policy.generation.vllm_cfg`` (upstream key names, every default filled);
    ``sleep_mode``: colocated generation, whose engine sleeps while the policy trains (as NeMo-RL's)."""
    precision = str(vllm_cfg["precision"])
    if precision not in _DTYPES:
        raise UserError(
            f"policy.generation.vllm_cfg.precision: unknown precision {precision!r}; known: {sorted(_DTYPES)}"
        )
    return {
        "model": model_dir,
        "tokenizer": model_dir,
        "dtype": _DTYPES[precision],
        "tensor_parallel_size": int(vllm_cfg["tensor_parallel_size"]),
        "gpu_memory_utilization": float(vllm_cfg["gpu_memory_utilization"]),
        "enforce_eager": bool(vllm_cfg["enforce_eager"]),
        # The schema's default is ${policy.max_total_sequence_length}, the backend's max_total_length.
        "max_model_len": int(vllm_cfg["max_model_len"]),
        "seed": int(seed),
        "worker_extension_cls": WORKER_EXTENSION,
        "logprobs_mode": "processed_logprobs",
        "skip_tokenizer_init": False,
        "enable_sleep_mode": bool(sleep_mode),
    }


def sampling_kwargs(cfg: GenerationConfig, *, max_tokens: int, seed: int | None) -> dict[str, Any]:
    """``vllm.SamplingParams(**kwargs)`` for one prompt; ``logprobs=0`` returns the sampled token's log-prob."""
    kwargs: dict[str, Any] = {
        "n": 1,
        "temperature": 0.0 if cfg.greedy else cfg.temperature,
        "top_p": cfg.top_p,
        "top_k": -1 if cfg.top_k is None else cfg.top_k,  # -1: vLLM's "off"
        "max_tokens": max_tokens,
        "logprobs": 0,
        "stop_token_ids": list(cfg.stop_token_ids or ()),
        "include_stop_str_in_output": True,
        "skip_special_tokens": True,
    }
    if cfg.stop_strings:
        kwargs["stop"] = list(cfg.stop_strings)
    if seed is not None:
        kwargs["seed"] = int(seed)
    return kwargs


def to_generation_output(completion: Any) -> GenerationOutput:
    """One vLLM ``CompletionOutput`` as a :class:`GenerationOutput`.

    ``completion.logprobs`` holds, per generated token, a mapping ``token id -> Logprob`` that contains at least
    the sampled token (``logprobs=0``).
    """
    token_ids = [int(t) for t in completion.token_ids]
    entries = completion.logprobs
    if entries is None or len(entries) != len(token_ids):
        raise RuntimeError(
            "vLLM returned no per-token log-probs (SamplingParams.logprobs=0 was ignored); "
            "this vLLM version is not supported"
        )
    logprobs = []
    for token, entry in zip(token_ids, entries):
        value = entry[token]
        logprobs.append(float(getattr(value, "logprob", value)))
    return GenerationOutput(
        token_ids=token_ids, logprobs=logprobs, text=completion.text, truncated=completion.finish_reason == "length"
    )


def _build_engine(**kwargs: Any) -> Any:
    import vllm

    try:
        return vllm.LLM(**kwargs)
    except TypeError as exc:
        if "logprobs_mode" in str(exc):
            raise UserError(
                f"vllm {vllm.__version__} has no logprobs_mode: rlvr needs a vLLM that reports "
                "processed log-probs (0.10.2 or newer)"
            ) from exc
        raise


def _make_sampling_params(kwargs: dict[str, Any]) -> Any:
    import vllm

    return vllm.SamplingParams(**kwargs)


class VLLMGenerationBackend:
    """:class:`~rlvr.generation.base.GenerationBackend` over a ``vllm.LLM`` engine.

    ``model`` and ``tokenizer`` are the policy's HF model and tokenizer (written once to a temporary folder for
    vLLM to load); ``batch_size`` is accepted for interface parity and ignored (vLLM schedules its own batches);
    ``max_total_length`` caps prompt + generation. ``sleep_mode`` (colocated generation): after each generation
    the engine sleeps at level 1 (weights to host memory, KV cache discarded) so that training has the device
    memory, and wakes before the next refit or generation. ``engine_factory`` and ``sampling_factory`` replace
    ``vllm.LLM`` and ``vllm.SamplingParams`` (tests).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any,
        *,
        batch_size: int | None = None,
        max_total_length: int | None = None,
        vllm_cfg: Mapping[str, Any],
        seed: int = 0,
        sleep_mode: bool = False,
        engine_factory: Callable[..., Any] | None = None,
        sampling_factory: Callable[[dict[str, Any]], Any] | None = None,
    ):
        del batch_size
        self.max_total_length = max_total_length
        self.sleep_mode, self.asleep = sleep_mode, False
        self._folder = Path(tempfile.mkdtemp(prefix="rlvr-vllm-"))
        try:
            model.save_pretrained(self._folder, safe_serialization=True)
            tokenizer.save_pretrained(self._folder)
            kwargs = engine_kwargs(vllm_cfg, model_dir=str(self._folder), seed=seed, sleep_mode=sleep_mode)
            self.llm = (engine_factory or _build_engine)(**kwargs)
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise
        self._sampling = sampling_factory or _make_sampling_params

    def generate(
        self, prompt_token_ids: list[list[int]], cfg: GenerationConfig, *, seed: int | None = None
    ) -> list[GenerationOutput]:
        """One continuation per prompt, in order; each prompt gets the seed ``seed + index`` (reproducible)."""
        prompts, params, empty = [], [], {}
        for i, prompt in enumerate(prompt_token_ids):
            if len(prompt) == 0:
                raise ValueError(f"prompt {i} is empty: generation needs at least one prompt token")
            budget = token_budget(len(prompt), cfg, self.max_total_length)
            if budget <= 0:  # already at the length cap: an empty, truncated sample (as the HF backend)
                empty[i] = GenerationOutput(token_ids=[], logprobs=[], text="", truncated=True)
                continue
            prompts.append({"prompt_token_ids": list(prompt)})
            params.append(
                self._sampling(sampling_kwargs(cfg, max_tokens=budget, seed=None if seed is None else seed + i))
            )
        results = iter(self.llm.generate(prompts, sampling_params=params, use_tqdm=False) if prompts else [])
        return [
            empty[i] if i in empty else to_generation_output(next(results).outputs[0])
            for i in range(len(prompt_token_ids))
        ]

    def update_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Load the trainer's HF-named weights into every vLLM worker, then drop cached KV of the old weights."""
        self.prepare_for_generation()  # a sleeping engine's weights are in host memory
        weights = [(name, tensor.detach().to("cpu").contiguous()) for name, tensor in state_dict.items()]
        self.llm.collective_rpc("rlvr_load_weights", args=(weights,))
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if reset is not None:
            reset()

    def prepare_for_generation(self) -> None:
        """Wake a sleeping engine: weights back on the device, KV cache re-allocated (its old blocks are gone, so
        no prefix may match them)."""
        if self.asleep:
            self.llm.wake_up()
            self.llm.reset_prefix_cache()
            self.asleep = False

    def finish_generation(self) -> None:
        """With ``sleep_mode``: sleep at level 1 until the next refit or generation (NeMo-RL's finish_generation)."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def close(self) -> None:
        """Release the engine and its temporary model folder."""
        self.llm = None
        shutil.rmtree(self._folder, ignore_errors=True)
