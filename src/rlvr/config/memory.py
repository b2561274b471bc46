"""How much memory a GRPO run will need, estimated from the config before anything runs (``-d`` prints it).

A batch that cannot fit used to be found out by the operating system: a huge ``num_generations_per_prompt``
allocated gigabytes in the first rollout and the run died. The estimate adds the buffers that grow with the
config, per training process, in bytes:

* weights and training state: fp32 master weights (4 B/param), gradients (4 B), AdamW's two moments (8 B), plus
  a compute copy when ``policy.precision`` is 16-bit and a frozen reference model when the loss needs one;
* the generation KV cache: ``2 x layers x kv_heads x head_dim`` values per token, for a batch of
  ``policy.generation_batch_size`` rows (all rollouts when unset) of ``policy.max_total_sequence_length`` tokens;
* the training micro-batch: the vocabulary logits ([B, S, V] in fp32, three live copies through log-softmax and
  its backward, unless ``policy.logprob_chunk_size`` chunks them) and the layers' saved activations (about 16
  fp32 values per hidden unit per layer and token; one per layer with activation checkpointing).

It is an estimate (allocator overhead, the framework's own workspace and fragmentation are not in it), so a plan is
refused only when the estimate alone exceeds what is available; the message names the keys that shrink it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIB = 1024**3
_BYTES = {"float32": 4, "fp32": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2}
SHRINKING_KEYS = (
    "policy.generation_batch_size",
    "grpo.num_generations_per_prompt",
    "policy.max_total_sequence_length",
    "policy.train_micro_batch_size",
    "policy.logprob_chunk_size",
    "policy.dtensor_cfg.activation_checkpointing",
)


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a decoder-only transformer that decide its memory."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    tied: bool

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any]) -> ModelShape:
        text = hf.get("text_config") or hf  # multimodal wrappers (Gemma 3) keep the decoder under text_config
        heads = int(text["num_attention_heads"])
        hidden = int(text["hidden_size"])
        return cls(
            vocab_size=int(text["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(text.get("intermediate_size") or 4 * hidden),
            num_layers=int(text["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(text.get("num_key_value_heads") or heads),
            head_dim=int(text.get("head_dim") or hidden // heads),
            tied=bool(hf.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        )

    @property
    def parameters(self) -> int:
        attention = self.hidden_size * self.head_dim * (2 * self.num_heads + 2 * self.num_kv_heads)
        mlp = 3 * self.hidden_size * self.intermediate_size
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tied else 2)
        return self.num_layers * (attention + mlp + 2 * self.hidden_size) + embeddings + self.hidden_size


@dataclass(frozen=True)
class MemoryEstimate:
    weights_and_optimizer: int
    generation_kv_cache: int
    logits: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights_and_optimizer + self.generation_kv_cache + self.logits + self.activations

    def lines(self) -> list[str]:
        parts = [
            ("weights + optimizer state", self.weights_and_optimizer),
            ("generation KV cache", self.generation_kv_cache),
            ("logits (training micro-batch)", self.logits),
            ("activations (training micro-batch)", self.activations),
            ("total", self.total),
        ]
        return [f"  {name}: {value / GIB:.2f} GiB" for name, value in parts]


def estimate(cfg: dict[str, Any], shape: ModelShape) -> MemoryEstimate:
    """Per training process, from the resolved rlvr config (see the module docstring for each term)."""
    policy, grpo = cfg["policy"], cfg["grpo"]
    compute_bytes = _BYTES[policy["precision"]]
    params = shape.parameters
    state = 16 * params + (params * compute_bytes if compute_bytes < 4 else 0)
    if cfg["loss_fn"]["reference_policy_kl_penalty"]:
        state += params * compute_bytes
    seq = int(policy["max_total_sequence_length"])
    rollouts = int(grpo["num_prompts_per_step"]) * int(grpo["num_generations_per_prompt"])
    gen_rows = min(int(policy["generation_batch_size"]), rollouts)
    kv = gen_rows * seq * 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * compute_bytes
    micro = int(policy["train_micro_batch_size"])
    chunk = policy["logprob_chunk_size"]
    logit_positions = micro * min(seq, int(chunk)) if chunk else micro * seq
    logits = 3 * logit_positions * shape.vocab_size * 4
    checkpointed = bool(policy["dtensor_cfg"]["activation_checkpointing"])
    per_layer = 1 if checkpointed else 16
    activations = micro * seq * shape.hidden_size * shape.num_layers * per_layer * 4
    return MemoryEstimate(state, kv, logits, activations)


def model_shape(cfg: dict[str, Any], policy_path: str | None = None) -> ModelShape | None:
    """The policy's shape from its config.json (HF folder) or run_config.yaml (checkpoint_megatron); None when the
    model is not on this machine (a hub name), in which case no estimate is made."""
    tiny = cfg.get("tiny") or {}
    if tiny.get("enabled") and not (policy_path and Path(policy_path).exists()):
        return _tiny_shape(tiny)
    path = Path(policy_path or cfg["policy"]["model_name"] or "")  # model_name null: made by an earlier rule
    if not str(path) or not path.exists():
        return None
    hf_config = path / "config.json"
    if hf_config.is_file():
        try:
            return ModelShape.from_hf_config(json.loads(hf_config.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None
    try:
        from rlvr.ckpt_layout import read_run_config  # torch-free, unlike rlvr.convert

        return ModelShape.from_hf_config(read_run_config(path))
    except Exception:  # noqa: BLE001 - not a readable artifact: no estimate, the stage reports what is wrong
        return None


def _tiny_shape(tiny: dict[str, Any]) -> ModelShape:
    """-c tiny before its policy exists: the shape its config asks for, with the character vocabulary."""
    from dataclasses import asdict

    from rlvr.tiny.config import TinyModelConfig
    from rlvr.tiny.tokenizer import BASE_CHARS, SPECIAL_TOKENS

    model = {**asdict(TinyModelConfig()), **(tiny.get("model") or {})}
    return ModelShape.from_hf_config({**model, "vocab_size": len(SPECIAL_TOKENS) + len(BASE_CHARS)})


def available_bytes(gpus_per_node: int) -> tuple[int, str] | None:
    """Free memory of the device that will hold a training process on this machine, or None when unknown."""
    if gpus_per_node > 0:
        try:
            import torch

            if torch.cuda.is_available():
                free, _total = torch.cuda.mem_get_info()
                return int(free), f"free memory of {torch.cuda.get_device_name()}"
        except Exception:  # noqa: BLE001 - no usable CUDA here: the run's GPUs are elsewhere
            return None
        return None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "available RAM (MemAvailable)"
    except OSError:
        return None
    return None


def check_fits(est: MemoryEstimate, available: tuple[int, str] | None) -> str | None:
    """An error text when the estimate alone exceeds what is available; None when it fits or cannot be told."""
    if available is None or est.total <= available[0]:
        return None
    return (
        f"the run needs an estimated {est.total / GIB:.1f} GiB per training process but the {available[1]} is "
        f"{available[0] / GIB:.1f} GiB:\n" + "\n".join(est.lines()) + "\nlower one of: " + ", ".join(SHRINKING_KEYS)
    )


def memory_plan(cfg: dict[str, Any], *, policy_path: str | None = None, local: bool = True) -> list[str]:
    """The estimate's lines for the plan; raises ConfigError when it cannot fit this machine (``local``: the run
    executes here, so this machine's RAM or GPU is the one to compare with)."""
    from rlvr.errors import ConfigError

    shape = model_shape(cfg, policy_path)
    if shape is None:
        return ["  no estimate: the policy is not on this machine yet (a hub name, or made by an earlier rule)"]
    est = estimate(cfg, shape)
    lines = [f"  policy: {shape.parameters / 1e6:.1f}M parameters"] + est.lines()
    if local:
        error = check_fits(est, available_bytes(int(cfg["cluster"]["gpus_per_node"])))
        if error:
            raise ConfigError(error, code="memory_estimate_exceeds_device")
    return lines
