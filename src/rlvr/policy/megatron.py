"""The trainable policy on megatron-core (``policy.megatron_cfg.enabled``): a ``GPTModel`` trained like HFPolicy.

The model is the megatron-core ``GPTModel`` of :func:`rlvr.convert.mcore_model.build_gpt_model` (local layer spec,
SDPA core attention, TP = PP = 1; a world-size-1 process group, gloo on CPU and nccl on GPU, unless the caller set
up its own), filled from the ``checkpoint_megatron`` the run starts from. :class:`MegatronPolicy` subclasses
:class:`~rlvr.policy.hf.HFPolicy` and replaces only the forward pass, so both backends share one implementation
of the GRPO training semantics (``K = B / gbs`` optimizer steps with global normalisers, grad clipping, one
scheduler step per ``train`` call, processed log-probs, position 0 and padding reported as 0).

Forward. megatron-core's ``GPTModel`` applies RoPE at positions ``0..S-1`` whatever ``position_ids`` say, and its
causal mask knows nothing of padding. Each row is therefore *packed* first: a stable permutation moves the real
tokens (``attention_mask == 1``) to the front, in order, so real token ``j`` sits at position ``j`` exactly as
HF's ``position_ids = cumsum(mask) - 1`` places it, and a causal mask alone keeps padding (now at the end) out
of every real token's context. Log-probs are computed on the packed row and scattered back.

Optimizer (``policy.megatron_cfg.optimizer``, Megatron names) -> ``torch.optim.AdamW``: ``lr``, ``weight_decay``
(decoupled, as Megatron's Adam; Megatron's rule exempts biases and 1-D tensors such as norm weights, so they go
into a ``weight_decay = 0`` group), ``adam_beta1/2``, ``adam_eps``; ``clip_grad`` replaces
``policy.max_grad_norm`` (0 = no clipping). Megatron's distributed optimizer only shards optimizer state over
data-parallel ranks; at world size 1 it is plain Adam, so it is not used. Its fp32 master weights for bf16
training are reproduced by HFPolicy's :class:`~rlvr.policy.precision.MasterWeights`: with ``policy.precision:
bfloat16`` the GPTModel computes in bf16 and AdamW steps fp32 copies (fp32 state), rounded back after each step.

Memory: ``policy.megatron_cfg.activation_checkpointing`` recomputes every ``TransformerLayer`` in backward
(:mod:`rlvr.policy.activations`, Megatron's ``recompute_granularity: full`` with the uniform method, one layer
per chunk); ``policy.logprob_chunk_size`` computes the log-probs from the decoder's hidden states a chunk of
positions at a time, as for the HF backend.

Scheduler (``policy.megatron_cfg.scheduler``) -> ``LambdaLR`` stepped once per GRPO step, with Megatron's
``OptimizerParamScheduler`` formula (:class:`MegatronLRSchedule`); its iterations are GRPO steps (NeMo-RL steps
Megatron's scheduler by the global batch size once per ``train`` call, with the iteration counts scaled by the
same factor). No scheduler section: constant ``lr``.

Without ``megatron_cfg.optimizer`` the backend falls back to ``policy.optimizer`` / ``policy.scheduler`` and
``policy.max_grad_norm``, built exactly as for HFPolicy (:mod:`rlvr.policy.optim`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from rlvr.errors import ConfigError
from rlvr.policy.hf import HFPolicy
from rlvr.policy.precision import parse_precision

_OPT_KEY = "policy.megatron_cfg.optimizer"
_SCHED_KEY = "policy.megatron_cfg.scheduler"
_PARALLEL_SIZES = (
    "tensor_model_parallel_size",
    "pipeline_model_parallel_size",
    "context_parallel_size",
    "expert_model_parallel_size",
)


@dataclasses.dataclass
class MegatronLRSchedule:
    """Megatron's ``OptimizerParamScheduler.get_lr`` as a function of the GRPO step ``n``.

    ``n <= W`` (W > 0): ``init + (lr - init) · n / W``; then ``constant``: ``lr``; ``n > D``: ``min_lr``;
    otherwise with ``ρ = (n - W) / (D - W)``: ``min_lr + c(ρ) · (lr - min_lr)``, ``c = 1 - ρ`` (linear) or
    ``(1 + cos πρ) / 2`` (cosine). Called as a ``LambdaLR`` factor it returns ``lr(n) / lr``.
    """

    lr: float
    min_lr: float
    style: str
    warmup_iters: int
    warmup_init: float
    decay_iters: int | None

    def at(self, n: int) -> float:
        """The learning rate after ``n`` scheduler steps."""
        if self.warmup_iters > 0 and n <= self.warmup_iters:
            return self.warmup_init + (self.lr - self.warmup_init) * n / self.warmup_iters
        if self.style == "constant":
            return self.lr
        assert self.decay_iters is not None  # checked by build_megatron_scheduler
        if n > self.decay_iters:
            return self.min_lr
        ratio = (n - self.warmup_iters) / (self.decay_iters - self.warmup_iters)
        coeff = 1.0 - ratio if self.style == "linear" else 0.5 * (math.cos(math.pi * ratio) + 1.0)
        return self.min_lr + coeff * (self.lr - self.min_lr)

    def __call__(self, n: int) -> float:
        return self.at(n) / self.lr


def _megatron_optimizer_cfg(cfg: Mapping[str, Any]) -> dict[str, float]:
    """The honoured keys of a complete ``megatron_cfg.optimizer`` (the schema has checked each value; the others
    are inert here, see the schema), with the one rule across keys checked."""
    out = {key: float(cfg[key]) for key in ("lr", "min_lr", "weight_decay", "adam_beta1", "adam_beta2", "adam_eps")}
    if not 0 <= out["min_lr"] <= out["lr"]:
        raise ConfigError(f"{_OPT_KEY}.min_lr: must lie in [0, lr={out['lr']}], got {out['min_lr']}")
    return out


def build_megatron_optimizer(
    named_params: list[tuple[str, torch.nn.Parameter]], cfg: Mapping[str, Any]
) -> torch.optim.AdamW:
    """AdamW for a complete ``megatron_cfg.optimizer``: group 0 decays (matrices), group 1 does not (biases and
    1-D tensors)."""
    opt = _megatron_optimizer_cfg(cfg)
    trainable = [(n, p) for n, p in named_params if p.requires_grad]
    no_decay = [p for n, p in trainable if p.dim() == 1 or n.endswith(".bias")]
    decay = [p for n, p in trainable if not (p.dim() == 1 or n.endswith(".bias"))]
    groups = [{"params": decay, "weight_decay": opt["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(
        [g for g in groups if g["params"]],
        lr=opt["lr"],
        betas=(opt["adam_beta1"], opt["adam_beta2"]),
        eps=opt["adam_eps"],
    )


def build_megatron_scheduler(
    optimizer: torch.optim.Optimizer,
    sched_cfg: Mapping[str, Any] | None,
    opt_cfg: Mapping[str, Any],
    *,
    train_iters: int | None = None,
) -> LambdaLR | None:
    """``LambdaLR`` over :class:`MegatronLRSchedule`, or None (constant ``lr``) when ``sched_cfg`` is null.

    Both sections complete (the schema has checked each value); ``lr_decay_iters: null`` means ``train_iters``
    (the run's GRPO step count), as in Megatron. The weight-decay keys are checked by the config
    (``config/checks.py``: a constant decay only).
    """
    if not sched_cfg:
        return None
    opt = _megatron_optimizer_cfg(opt_cfg)
    style = sched_cfg["lr_decay_style"]
    warmup = int(sched_cfg["lr_warmup_iters"])
    init = float(sched_cfg["lr_warmup_init"])
    decay = sched_cfg["lr_decay_iters"]
    decay = int(decay) if decay is not None else train_iters
    if warmup < 0 or not 0 <= init <= opt["lr"]:
        raise ConfigError(
            f"{_SCHED_KEY}: need lr_warmup_iters >= 0 and 0 <= lr_warmup_init <= lr={opt['lr']}, "
            f"got {warmup} and {init}"
        )
    if style != "constant":
        if decay is None:
            raise ConfigError(
                f"{_SCHED_KEY}.lr_decay_iters: required for lr_decay_style={style} (or pass the "
                "run's step count as train_iters)"
            )
        if decay <= warmup:
            raise ConfigError(f"{_SCHED_KEY}.lr_decay_iters ({decay}) must exceed lr_warmup_iters ({warmup})")
    schedule = MegatronLRSchedule(
        lr=float(opt["lr"]),
        min_lr=float(opt["min_lr"]),
        style=style,
        warmup_iters=warmup,
        warmup_init=init,
        decay_iters=decay,
    )
    return LambdaLR(optimizer, schedule)


def _check_megatron_cfg(mcfg: Mapping[str, Any]) -> None:
    """Refuse settings this backend would otherwise silently ignore."""
    wrong = {k: mcfg[k] for k in _PARALLEL_SIZES if mcfg[k] != 1}
    if wrong or mcfg["sequence_parallel"]:
        raise ConfigError(
            f"policy.megatron_cfg: model parallelism is not supported (got {wrong or 'sequence_parallel'}"
            "); set the parallel sizes to 1 and sequence_parallel to false"
        )
    if mcfg["scheduler"] and not mcfg["optimizer"]:
        raise ConfigError(
            f"{_SCHED_KEY} needs {_OPT_KEY} (its lr and min_lr); set both, or neither to use "
            "policy.optimizer/policy.scheduler"
        )


class MegatronPolicy(HFPolicy):
    """A megatron-core ``GPTModel`` plus optimizer/scheduler with HFPolicy's interface and semantics.

    ``hf_config`` is the architecture recorded in the checkpoint's ``run_config.yaml`` (``model.hf_config``):
    it names the HF <-> megatron tensor mapping used by :meth:`hf_state_dict` and :meth:`hf_model`.
    ``megatron_optimizer`` / ``megatron_scheduler``: ``policy.megatron_cfg.optimizer`` / ``.scheduler``; when
    the former is None the HF-style ``optimizer`` / ``scheduler`` configs are used, as by HFPolicy.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        hf_config: Mapping[str, Any],
        *,
        megatron_optimizer: Mapping[str, Any] | None = None,
        megatron_scheduler: Mapping[str, Any] | None = None,
        train_iters: int | None = None,
        **hf_policy_kwargs: Any,
    ):
        """``hf_policy_kwargs``: HFPolicy's keyword arguments (``optimizer``, ``scheduler``, ``max_grad_norm``,
        ``temperature``, ``top_k``, ``top_p``, the memory keys, a data-parallel ``all_reduce``, ...)."""
        # Read by _build_optimizer/_build_scheduler, which HFPolicy calls over the fp32 master weights.
        self._megatron_optimizer, self._megatron_scheduler = megatron_optimizer, megatron_scheduler
        self._train_iters = train_iters
        super().__init__(model, **hf_policy_kwargs)
        self.share_prompts = False  # policy.prefix runs a transformers model with a KV cache
        self.pack = False  # policy.packing too; _scores below packs the rows its own way
        self.hf_config = dict(hf_config)

    def _build_optimizer(
        self, named_params: list[tuple[str, torch.nn.Parameter]], cfg: Mapping[str, Any] | None
    ) -> torch.optim.Optimizer:
        if self._megatron_optimizer:
            return build_megatron_optimizer(named_params, self._megatron_optimizer)
        return super()._build_optimizer(named_params, cfg)

    def _build_scheduler(self, cfg: Any) -> LRScheduler | None:
        if self._megatron_optimizer:
            return build_megatron_scheduler(
                self.optimizer, self._megatron_scheduler, self._megatron_optimizer, train_iters=self._train_iters
            )
        return super()._build_scheduler(cfg)

    @classmethod
    def from_config(
        cls,
        policy_cfg: Mapping[str, Any],
        *,
        policy_path: str | Path,  # type: ignore[override]
        device: str | torch.device | None = None,
        train_iters: int | None = None,
        **hf_policy_kwargs: Any,
    ) -> MegatronPolicy:
        """Build from the complete ``policy`` section and the ``checkpoint_megatron`` at ``policy_path`` (root or
        iter_*).

        ``train_iters``: the run's GRPO step count, used only when ``lr_decay_iters`` is null.
        ``hf_policy_kwargs`` go to the constructor (e.g. ``all_reduce``).
        """
        from rlvr.convert.artifact import load_checkpoint_megatron
        from rlvr.convert.mcore_model import build_gpt_model, load_state_into_gpt

        mcfg = policy_cfg["megatron_cfg"]
        _check_megatron_cfg(mcfg)
        dtype = parse_precision(policy_cfg["precision"])
        state, run_config, _ = load_checkpoint_megatron(policy_path)
        hf_config = run_config["model"]["hf_config"]
        model = build_gpt_model(hf_config, dtype=dtype, device=device)
        load_state_into_gpt(model, state)
        max_grad_norm = policy_cfg["max_grad_norm"]
        if mcfg["optimizer"] and mcfg["optimizer"]["clip_grad"] is not None:
            max_grad_norm = float(mcfg["optimizer"]["clip_grad"])
        generation = policy_cfg["generation"]
        return cls(
            model,
            hf_config,
            megatron_optimizer=mcfg["optimizer"],
            megatron_scheduler=mcfg["scheduler"],
            train_iters=train_iters,
            optimizer=policy_cfg["optimizer"],
            scheduler=policy_cfg["scheduler"],
            max_grad_norm=max_grad_norm,
            temperature=float(generation["temperature"]),
            top_k=generation["top_k"],
            top_p=float(generation["top_p"]),
            activation_checkpointing=bool(mcfg["activation_checkpointing"]),
            logprob_chunk_size=policy_cfg["logprob_chunk_size"],
            sequence_multiple=int(policy_cfg["make_sequence_length_divisible_by"]),
            **hf_policy_kwargs,
        )

    def _scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, filtered: bool) -> torch.Tensor:
        """Forward + processed log-probs ``[b, S]`` on packed rows (module docstring), scattered back in place.

        ``order[i]`` ``[S]`` lists row ``i``'s real positions first (stable), then its padding; packed position
        ``j`` holds original position ``order[i, j]``, so ``lp[i, order[i, j]] = lp_packed[i, j]``. Entries at
        padding, and at a real token right after padding, are garbage here and zeroed by the callers.
        """
        order = torch.argsort((attention_mask == 0).to(torch.int8), dim=-1, stable=True)
        packed = input_ids.gather(1, order)
        positions = torch.arange(packed.shape[1], device=packed.device).unsqueeze(0).expand_as(packed)
        # attention_mask None: causal mask only (padding sits after every real token)
        lp = self._processed_logprobs(packed, None, positions, filtered)
        return torch.zeros_like(lp).scatter(1, order, lp)

    def _logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor
    ) -> torch.Tensor:
        return self.model(input_ids, positions, attention_mask)

    def _hidden_and_head(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor
    ) -> tuple[torch.Tensor, Any]:
        """Decoder output ``[b, S, H]`` (after the final norm, which the decoder block owns) and the output layer.

        ``GPTModel.forward`` returns the hidden states instead of logits when ``post_process`` is off; the flag
        is only read at the end of the forward, so it is switched off for this call only.
        """
        model = self.model
        model.post_process = False
        try:
            hidden = model(input_ids, positions, attention_mask)  # [S, b, H]
        finally:
            model.post_process = True
        weight = model.shared_embedding_or_output_weight() if model.share_embeddings_and_output_weights else None

        def head(states: torch.Tensor) -> torch.Tensor:  # [b, c, H] -> [b, c, V]
            return model.output_layer(states.transpose(0, 1), weight=weight)[0].transpose(0, 1)

        return hidden.transpose(0, 1), head

    def state_dict(self) -> dict[str, Any]:
        """Model (checkpoint-named tensors, see :func:`rlvr.convert.mcore_model.gpt_state_dict`), fp32 master
        weights, optimizer and scheduler state, for a checkpoint (restored by HFPolicy's ``load_state_dict``)."""
        from rlvr.convert.mcore_model import gpt_state_dict

        return {
            "model": gpt_state_dict(self.model),
            "master_weights": self.master.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        }

    def load_model_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Weights only (``state_dict()["model"]``): every tensor present with its shape, nothing extra; the fp32
        masters restart from them."""
        from rlvr.convert.mcore_model import load_state_into_gpt

        load_state_into_gpt(self.model, state)
        self.master.copy_from_model()

    def model_state(self) -> dict[str, torch.Tensor]:
        """Detached weights under checkpoint (megatron-core) names; :meth:`hf_state_dict` gives HF names."""
        from rlvr.convert.mcore_model import gpt_state_dict

        return gpt_state_dict(self.model)

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The current weights under HF names (QKV and gate/up split), for refitting an HF/vLLM generator.

        Detached; tensors may share storage with the live parameters, so copy before mutating them.
        """
        from rlvr.convert.state_mapping import mcore_to_hf_state

        return mcore_to_hf_state(self.model_state(), self.hf_config, source="MegatronPolicy weights")

    def hf_model(self) -> torch.nn.Module:
        """A fresh HF ``PreTrainedModel`` (CPU, eval mode, the policy's dtype) holding copies of the weights."""
        from transformers import AutoModelForCausalLM

        from rlvr.convert.hf_megatron import hf_config_from_dict

        dtype = next(self.model.parameters()).dtype
        model = AutoModelForCausalLM.from_config(hf_config_from_dict(self.hf_config), dtype=dtype)
        model.load_state_dict(self.hf_state_dict(), strict=True)
        return model.eval()
