"""What every generation backend accepts and returns, and the registry that picks one by name.

The GRPO controller talks to a backend only through :class:`GenerationBackend`, whose inputs and outputs are
plain lists (picklable, so a backend can live in a Ray actor). Sampling semantics follow vLLM as NeMo-RL drives
it: temperature, then top-k, then top-p; generation stops at EOS, at any ``stop_token_ids`` (the stop token is
part of the output) or when the decoded text contains a ``stop_strings`` entry (the text is cut right after the
stop string, which is kept, as with ``include_stop_str_in_output=True``); ``truncated`` means it ran out of
``max_new_tokens`` (or of the model length) first.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from rlvr.errors import ConfigError, UserError


@dataclasses.dataclass(frozen=True)
class GenerationConfig:
    """Sampling settings, from the ``policy.generation`` keys of the step config.

    ``top_k`` None (or upstream's -1/0) and ``top_p`` 1.0 switch the filter off. ``stop_token_ids`` None means
    "EOS only"; EOS always stops, as in vLLM. ``greedy`` is not an upstream key: it takes the most likely token
    (tests, deterministic evaluation) while ``logprobs`` still report the processed distribution.
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    stop_token_ids: tuple[int, ...] | None = None
    stop_strings: tuple[str, ...] | None = None
    greedy: bool = False

    def __post_init__(self) -> None:
        if self.top_k is not None and self.top_k <= 0:
            object.__setattr__(self, "top_k", None)  # upstream spells "off" as -1 (vLLM) or null
        if self.stop_token_ids is not None:
            object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        if self.stop_strings is not None:
            object.__setattr__(self, "stop_strings", tuple(str(s) for s in self.stop_strings))
        if self.max_new_tokens < 1:
            raise ConfigError(f"policy.generation.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise ConfigError(
                f"policy.generation.temperature must be > 0, got {self.temperature} "
                "(for greedy decoding keep a positive temperature and set greedy)"
            )
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"policy.generation.top_p must be in (0, 1], got {self.top_p}")
        if any(s == "" for s in self.stop_strings or ()):
            raise ConfigError("policy.generation.stop_strings must not contain an empty string")

    @classmethod
    def from_config(cls, generation_cfg: Mapping[str, Any], *, validation: bool = False) -> GenerationConfig:
        """Build from a ``policy.generation`` mapping; other keys there (backend, vllm_cfg, ...) are ignored.

        With ``validation=True`` the ``val_temperature/val_top_p/val_top_k`` keys win when present (absent in the
        Nemotron configs, hence the fallback).
        """
        if "max_new_tokens" not in generation_cfg:
            raise ConfigError("policy.generation.max_new_tokens is required")

        def pick(key: str, default: Any) -> Any:
            value = generation_cfg.get(key, default)
            if validation and generation_cfg.get(f"val_{key}") is not None:
                value = generation_cfg[f"val_{key}"]
            return default if value is None else value

        return cls(
            max_new_tokens=int(generation_cfg["max_new_tokens"]),
            temperature=float(pick("temperature", 1.0)),
            top_p=float(pick("top_p", 1.0)),
            top_k=None if pick("top_k", None) is None else int(pick("top_k", None)),
            stop_token_ids=generation_cfg.get("stop_token_ids"),
            stop_strings=generation_cfg.get("stop_strings"),
        )

    def resolved_stop_token_ids(self, eos_token_id: int | Sequence[int] | None) -> frozenset[int]:
        """The token ids that end a sample: ``stop_token_ids`` (None -> none extra) plus EOS."""
        ids = set(self.stop_token_ids or ())
        if isinstance(eos_token_id, int):
            ids.add(eos_token_id)
        elif eos_token_id is not None:
            ids.update(int(t) for t in eos_token_id)
        return frozenset(ids)


def token_budget(prompt_length: int, cfg: GenerationConfig, max_total_length: int | None) -> int:
    """Tokens a prompt may still generate: ``max_new_tokens``, capped by ``max_total_length`` (vLLM's
    ``max_model_len``) minus the prompt; 0 or less means the prompt is already at the cap."""
    if max_total_length is None:
        return cfg.max_new_tokens
    return min(cfg.max_new_tokens, max_total_length - prompt_length)


@dataclasses.dataclass
class GenerationOutput:
    """One generated sample.

    ``token_ids`` are the generated tokens only (a stop token is included), ``logprobs[i]`` is the log-prob of
    ``token_ids[i]`` under the processed sampling distribution, ``text`` the decoded generation without special
    tokens (cut after a matched stop string), ``truncated`` True when it ended by length, not by a stop.
    """

    token_ids: list[int]
    logprobs: list[float]
    text: str
    truncated: bool


@runtime_checkable
class GenerationBackend(Protocol):
    """The controller's view of an inference engine (HF here; vLLM on GPU machines)."""

    def generate(
        self, prompt_token_ids: list[list[int]], cfg: GenerationConfig, *, seed: int | None
    ) -> list[GenerationOutput]:
        """Sample one continuation per prompt, in order; ``seed`` makes the result reproducible."""
        ...

    def update_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Load the trainer's current weights (refit) before the next generation."""
        ...

    def prepare_for_generation(self) -> None:
        """Take back the device memory handed to training (vLLM: wake from sleep); before a refit or a generation."""
        ...

    def finish_generation(self) -> None:
        """Hand the device memory back to training (vLLM colocated: sleep, level 1; HF: free cached blocks)."""
        ...


# name -> "module:attribute" (imported on first use, so that vllm is only touched when asked for) or a factory.
_BACKENDS: dict[str, str | Callable[..., GenerationBackend]] = {
    "hf": "rlvr.generation.hf:HFGenerationBackend",
    "vllm": "rlvr.generation.vllm:VLLMGenerationBackend",
}
# Backends that need an extra package; the message says how to get it.
_REQUIREMENTS: dict[str, tuple[str, str]] = {
    "vllm": (
        "vllm",
        "vLLM runs on GPU machines only: install the 'gpu' extra there (pip install 'rlvr[gpu]'), "
        "or set policy.generation.backend: hf",
    ),
}


def register_generation_backend(name: str, target: str | Callable[..., GenerationBackend]) -> None:
    """Add a backend under ``name``: a factory, or ``"module:attribute"`` imported lazily."""
    _BACKENDS[name] = target


def generation_backend_names() -> list[str]:
    """The registered backend names, sorted."""
    return sorted(_BACKENDS)


def resolve_generation_backend(name: str) -> Callable[..., GenerationBackend]:
    """The factory registered under ``name``; unknown names and missing packages are :class:`ConfigError`."""
    if name not in _BACKENDS:
        raise ConfigError(f"policy.generation.backend: unknown backend {name!r}; known: {generation_backend_names()}")
    if name in _REQUIREMENTS:
        package, hint = _REQUIREMENTS[name]
        try:
            importlib.import_module(package)
        except ImportError as exc:
            raise UserError(
                f"policy.generation.backend={name!r} needs the {package!r} package ({exc}). {hint}"
            ) from exc
    target = _BACKENDS[name]
    if not isinstance(target, str):
        return target
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise UserError(
            f"policy.generation.backend={name!r}: {module_name} is not part of this installation; "
            f"known backends: {generation_backend_names()}"
        ) from exc
    return getattr(module, attribute)


def make_generation_backend(name: str, *args: Any, **kwargs: Any) -> GenerationBackend:
    """Construct the backend registered under ``name`` with the given arguments."""
    return resolve_generation_backend(name)(*args, **kwargs)
