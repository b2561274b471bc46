"""The trainable policy: a transformers causal LM with its optimizer and LR schedule (CPU, or one GPU).

One GRPO step calls :meth:`HFPolicy.get_logprobs` (``prev_logprobs``; the reference model's instance with
``filtered=False``) and then :meth:`HFPolicy.train` once. ``train`` follows NeMo-RL's DTensor worker:

* the rollout of ``B`` rows (not shuffled) is cut into ``K = B / global_batch_size`` optimizer steps;
* each global batch: ``zero_grad``; ``N_seq = Σ sample_mask``, ``N_tok = Σ token_mask[:, 1:] · sample_mask``
  (position 0 never holds a predicted token); micro-batches of ``micro_batch_size`` rows whose losses the loss
  function already divides by these *global* counts, so summing their gradients gives the gradient of the
  global-batch loss whatever the micro-batch size or composition; clip the grad norm to ``max_grad_norm``;
  ``optimizer.step()``. Composition: the rows of each prompt go together and each distinct prompt of a
  micro-batch runs once (:mod:`rlvr.policy.prefix`; ``share_prompts``, off with chunked log-probs, activation
  checkpointing or LoRA), otherwise rows go in length order, each micro-batch on the columns it uses
  (:mod:`rlvr.policy.batching`); with ``policy.sequence_packing.enabled`` (and ``share_prompts``) each
  micro-batch runs packed instead, without padding (:mod:`rlvr.policy.packing`);
* the LR scheduler steps once per ``train`` call (warm-up counts GRPO steps, not optimizer steps).

* the loop itself is :class:`~rlvr.policy.hf_train.TrainingLoop` (:mod:`rlvr.policy.hf_train`), mixed in here.

Data parallel (:mod:`rlvr.distributed`): with ``all_reduce`` set, each rank holds ``1/W`` of every global batch
and the same weights; the two counts and then the gradients are summed over ranks (``all_reduce``, in place,
SUM). Since every rank's loss is already divided by the *global* counts, the summed gradient is the gradient of
the full global batch, so every rank clips the same norm and takes the same step as one process would.

Current log-probs use the generation temperature and top-k/top-p, exactly as the sampler did
(:mod:`rlvr.policy.logprobs`). Dropout stays off (the model is kept in eval mode): the ratio against
``prev_logprobs`` must be exactly 1 before the first update.

Precision and memory (README "Precision and memory"): the model holds the compute-dtype weights
(``policy.precision``); the optimizer steps fp32 master copies (:class:`~rlvr.policy.precision.MasterWeights`)
that are rounded back into the model after every step. ``policy.dtensor_cfg.activation_checkpointing``
recomputes each decoder layer in backward (:mod:`rlvr.policy.activations`); ``policy.logprob_chunk_size``
computes log-probs from the hidden states a chunk of positions at a time
(:func:`~rlvr.policy.logprobs.chunked_token_logprobs`).

Extension points (e.g. adapters): :func:`trainable_parameters` lists what is trained, :meth:`HFPolicy.
_build_optimizer` / :meth:`HFPolicy._build_scheduler` build the optimizer over the fp32 masters, and
:meth:`HFPolicy.model_state` / :meth:`HFPolicy.state_dict` export the weights.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from rlvr.errors import CheckpointError, ConfigError
from rlvr.policy import lora
from rlvr.policy.activations import enable_activation_checkpointing
from rlvr.policy.batching import length_order, used_width
from rlvr.policy.hf_train import AllReduce, TrainingLoop
from rlvr.policy.hf_train import sum_gradients as sum_gradients  # re-exported: importable from here as before
from rlvr.policy.logprobs import chunked_token_logprobs, mask_filtered_tokens, token_logprobs
from rlvr.policy.offload import OptimizerOffload, offload_settings
from rlvr.policy.optim import build_optimizer, build_scheduler
from rlvr.policy.packing import can_pack, packed_logprobs
from rlvr.policy.precision import MasterWeights, parse_precision
from rlvr.policy.prefix import shared_prompt_logprobs

# Config attributes of HF architectures that transform the logits after the output layer; chunked log-probs
# apply the output layer alone, so they would silently differ for these.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def load_causal_lm(
    path: str,
    *,
    precision: str = "float32",
    overrides: Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
) -> torch.nn.Module:
    """``AutoModelForCausalLM.from_pretrained(path)`` in ``precision`` on ``device`` (default: cuda if present)."""
    from transformers import AutoModelForCausalLM

    dtype = parse_precision(precision)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **dict(overrides or {}))
    except OSError as exc:
        raise CheckpointError(f"policy.model_name: cannot load a HF causal LM from {path!r}: {exc}") from exc
    return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def trainable_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The ``(name, parameter)`` pairs the optimizer trains: those with ``requires_grad``."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def _check_chunking(model: torch.nn.Module, chunk_size: int | None) -> None:
    """Refuse ``policy.logprob_chunk_size`` where the output layer alone does not give the model's logits."""
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"policy.logprob_chunk_size: must be null or an integer >= 1, got {chunk_size!r}")
    config = getattr(model, "config", None)
    transforms = [a for a in _LOGIT_TRANSFORMS if getattr(config, a, None) not in (None, 1, 1.0)]
    if transforms:
        raise ConfigError(
            f"policy.logprob_chunk_size: {type(model).__name__} transforms its logits after the "
            f"output layer ({', '.join(transforms)}), which chunked log-probs do not reproduce; "
            "set policy.logprob_chunk_size: null"
        )


class HFPolicy(TrainingLoop):
    """A ``PreTrainedModel`` plus optimizer/scheduler, scoring with the sampler's processed distribution.

    ``temperature``/``top_k``/``top_p`` are the ``policy.generation`` values; ``filtered=False`` passes keep
    the temperature only (reference policy, KL). A model without trainable parameters (the frozen reference
    policy) gets no optimizer and can only score. ``all_reduce`` (default None: a single process) sums a tensor
    in place over the data-parallel ranks; see the module docstring. The model's dtype is the compute dtype;
    its low-precision trainable parameters are trained through fp32 masters (``self.master``).
    ``activation_checkpointing`` and ``logprob_chunk_size``: the two memory keys (module docstring).
    ``offload_for_generation`` / ``offload_for_logprob``: hand the optimizer state to the host while colocated
    generation runs / during the log-prob pass too (:mod:`rlvr.policy.offload`); it comes back before training.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Any = None,
        max_grad_norm: float | None = 1.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float = 1.0,
        all_reduce: AllReduce | None = None,
        activation_checkpointing: bool = False,
        logprob_chunk_size: int | None = None,
        sequence_multiple: int = 1,
        sequence_packing: bool = False,
        offload_for_generation: bool = False,
        offload_for_logprob: bool = False,
    ):
        self.model = model.eval()
        self.sequence_multiple = sequence_multiple  # micro-batch widths round up to it (policy.batching)
        # policy.prefix needs the transformers forward with a KV cache, full logits and no per-layer recompute.
        self.share_prompts = not (logprob_chunk_size or activation_checkpointing or lora.is_lora_model(model))
        # policy.packing has the same needs, and an attention implementation that reads a 4-D mask.
        self.pack = sequence_packing and self.share_prompts and can_pack(model)
        _check_chunking(model, logprob_chunk_size)
        self.logprob_chunk_size = logprob_chunk_size
        if activation_checkpointing:
            enable_activation_checkpointing(model)
        trainable = trainable_parameters(model)
        self.master = MasterWeights(trainable)
        self.optimizer = self._build_optimizer(self.master.named_parameters(), optimizer) if trainable else None
        self.scheduler = self._build_scheduler(scheduler) if trainable else None
        self.optimizer_offload = OptimizerOffload(self.optimizer) if trainable else None
        self.offload_for_generation, self.offload_for_logprob = offload_for_generation, offload_for_logprob
        self.all_reduce = all_reduce
        self.max_grad_norm = max_grad_norm
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p

    @classmethod
    def from_config(
        cls,
        policy_cfg: Mapping[str, Any],
        *,
        model: torch.nn.Module | None = None,
        device: str | torch.device | None = None,
        all_reduce: AllReduce | None = None,
    ) -> HFPolicy:
        """Build from the complete ``policy`` section (every key present, as the loader fills it); loads
        ``policy.model_name`` unless ``model`` is given.

        With ``dtensor_cfg.lora_cfg.enabled`` a trainable ``model`` is wrapped (in place) with LoRA adapters and
        only those train; a frozen one (the reference policy) stays as it is.
        """
        parse_precision(policy_cfg["precision"])  # refuse float16 even for a model loaded elsewhere
        if model is None:
            model = load_causal_lm(
                policy_cfg["model_name"],
                precision=policy_cfg["precision"],
                overrides=policy_cfg["hf_config_overrides"],
                device=device,
            )
        lora_settings = lora.lora_settings(policy_cfg)
        if lora_settings is not None and any(p.requires_grad for p in model.parameters()):
            model = lora.apply_lora(model, lora_settings)
        return cls(model, all_reduce=all_reduce, **cls.settings_from_config(policy_cfg, model))

    @staticmethod
    def settings_from_config(policy_cfg: dict, model: torch.nn.Module) -> dict[str, Any]:
        """The constructor's keywords that ``policy.*`` sets, for this class and its sharded subclass alike."""
        generation = policy_cfg["generation"]
        return dict(
            optimizer=policy_cfg["optimizer"],
            scheduler=policy_cfg["scheduler"],
            max_grad_norm=policy_cfg["max_grad_norm"],
            temperature=float(generation["temperature"]),
            top_k=generation["top_k"],
            top_p=float(generation["top_p"]),
            activation_checkpointing=bool(policy_cfg["dtensor_cfg"]["activation_checkpointing"]),
            logprob_chunk_size=policy_cfg["logprob_chunk_size"],
            sequence_multiple=int(policy_cfg["make_sequence_length_divisible_by"]),
            sequence_packing=bool(policy_cfg["sequence_packing"]["enabled"]),
            **offload_settings(policy_cfg, next(model.parameters()).device),
        )

    def _build_optimizer(
        self, named_params: list[tuple[str, torch.nn.Parameter]], cfg: Mapping[str, Any] | None
    ) -> torch.optim.Optimizer:
        """The optimizer over ``named_params`` (the fp32 masters, named as in the model)."""
        return build_optimizer([p for _, p in named_params], cfg)

    def _build_scheduler(self, cfg: Any) -> Any:
        """The LR scheduler of ``self.optimizer`` (None: constant LR)."""
        return build_scheduler(self.optimizer, cfg)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def offload_before_refit(self) -> None:
        """Colocated generation is about to use this device: the optimizer state to the host, the last step's
        gradients released (NeMo-RL's name; a no-op unless ``offload_for_generation``)."""
        if self.offload_for_generation and self.optimizer_offload is not None:
            self.optimizer_offload.offload()

    def prepare_for_lp_inference(self) -> None:
        """Before a log-prob pass: with ``policy.offload_optimizer_for_logprob`` the optimizer state goes to the
        host here too (the pass needs the device memory, not the state)."""
        if self.offload_for_logprob and self.optimizer_offload is not None:
            self.optimizer_offload.offload()

    def prepare_for_training(self) -> None:
        """The optimizer state back where it was (before any optimizer step; a no-op unless offloaded)."""
        if self.optimizer_offload is not None:
            self.optimizer_offload.reload()

    def _scores(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, filtered: bool) -> torch.Tensor:
        """Forward + processed log-probs ``[b, S]``; ``-inf`` (filtered) entries are left in place."""
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # count real tokens: left or right padding
        return self._processed_logprobs(input_ids, attention_mask, positions, filtered)

    def _processed_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor, filtered: bool
    ) -> torch.Tensor:
        """Log-probs ``[b, S]`` (fp32) from the full logits, or chunk by chunk from the hidden states."""
        sampling: dict[str, Any] = {"temperature": self.temperature}
        if filtered:
            sampling.update(top_k=self.top_k, top_p=self.top_p)
        if not self.logprob_chunk_size:
            return token_logprobs(self._logits(input_ids, attention_mask, positions), input_ids, **sampling)
        hidden, head = self._hidden_and_head(input_ids, attention_mask, positions)
        return chunked_token_logprobs(hidden, head, input_ids, chunk_size=self.logprob_chunk_size, **sampling)

    def _logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor
    ) -> torch.Tensor:
        """``[b, S, V]`` logits in the compute dtype."""
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False
        ).logits

    def _hidden_and_head(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, positions: torch.Tensor
    ) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
        """Final hidden states ``[b, S, H]`` (after the last norm) and the output layer ``[.., H] -> [.., V]``."""
        get_decoder = getattr(self.model, "get_decoder", None)
        decoder = get_decoder() if get_decoder is not None else None
        head = self.model.get_output_embeddings() if hasattr(self.model, "get_output_embeddings") else None
        if decoder is None or head is None:
            raise ConfigError(
                f"policy.logprob_chunk_size: {type(self.model).__name__} does not expose its decoder "
                "and output layer (get_decoder, get_output_embeddings); set policy.logprob_chunk_size: null"
            )
        out = decoder(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions, use_cache=False)
        return out.last_hidden_state, head

    def _shared_prompt_scores(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: torch.Tensor
    ) -> torch.Tensor:
        """As :meth:`_scores` (filtered) at the response positions, each distinct prompt run once (policy.prefix)."""
        sampling = {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}
        return shared_prompt_logprobs(self.model, input_ids, attention_mask, prompt_len, sampling=sampling)

    def _packed_scores(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_len: torch.Tensor
    ) -> torch.Tensor:
        """As :meth:`_scores` (filtered) at the response positions, the micro-batch packed (policy.packing)."""
        sampling = {"temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p}
        return packed_logprobs(self.model, input_ids, attention_mask, prompt_len, sampling=sampling)

    @staticmethod
    def _predicted(attention_mask: torch.Tensor) -> torch.Tensor:
        """``[B, S]`` bool: token ``t`` is real and so is ``t-1`` (its logprob has a real context)."""
        real = attention_mask.bool()
        return torch.nn.functional.pad(real[:, 1:] & real[:, :-1], (1, 0), value=False)

    @torch.no_grad()
    def get_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, micro_batch_size: int, filtered: bool = True
    ) -> torch.Tensor:
        """Log-probs ``[B, S]`` (float32, on CPU): ``lp[:, t] = log p(x_t | x_<t)``, 0 at position 0 and padding.

        ``filtered`` applies the generation top-k/top-p (``prev_logprobs``); False keeps the temperature only
        (``reference_policy_logprobs``). Tokens outside the filtered set are reported as 0, not ``-inf``.
        """
        total, seq = input_ids.shape
        order = length_order(attention_mask)  # micro-batches of similar lengths, each on its own width
        out = torch.zeros((total, seq), dtype=torch.float32)
        for start in range(0, total, micro_batch_size):
            rows = order[start : start + micro_batch_size]
            width = used_width(attention_mask[rows], self.sequence_multiple)
            ids = input_ids[rows, :width].to(self.device)
            mask = attention_mask[rows, :width].to(self.device)
            lp, _ = mask_filtered_tokens(self._scores(ids, mask, filtered), mask)
            out[rows.cpu(), :width] = torch.where(self._predicted(mask), lp, torch.zeros_like(lp)).cpu()
        return out

    @property
    def is_lora(self) -> bool:
        return lora.is_lora_model(self.model)

    def state_dict(self) -> dict[str, Any]:
        """Model (compute dtype; LoRA: the adapter tensors only), fp32 master weights (empty for fp32 trainable
        parameters), optimizer and scheduler state, for a checkpoint."""
        return {
            "model": lora.adapter_state(self.model) if self.is_lora else self.model.state_dict(),
            "master_weights": self.master.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (the scheduler part must match the configured scheduler).

        A checkpoint without ``master_weights`` (saved before they existed) restarts the masters from the weights.
        """
        if (state.get("scheduler") is None) != (self.scheduler is None):
            raise CheckpointError("checkpoint scheduler state does not match policy.scheduler (one is null)")
        self.prepare_for_training()  # the loaded state replaces the entries an offload would bring back
        self.load_model_state(state["model"])
        if state.get("master_weights") is not None:
            self.master.load_state_dict(state["master_weights"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])

    def load_model_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Weights only (``state_dict()["model"]``; LoRA: the adapter tensors); the fp32 masters restart from them."""
        if self.is_lora:
            lora.load_adapter_state(self.model, state)
        else:
            self.model.load_state_dict(dict(state))
        self.master.copy_from_model()

    def model_state(self) -> dict[str, torch.Tensor]:
        """Detached weights by parameter name, for refitting a generation backend (LoRA: merged, HF names)."""
        if self.is_lora:
            return lora.merged_state_dict(self.model)
        return {name: tensor.detach() for name, tensor in self.model.state_dict().items()}

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a generation backend is refitted with: :meth:`model_state` (already under HF names)."""
        return self.model_state()

    def hf_model(self) -> torch.nn.Module:
        """The transformers model to export (LoRA: a merged copy without adapter layers)."""
        return lora.merged_model(self.model) if self.is_lora else self.model

    def save_adapter(self, folder: Path, *, base_model: str | None) -> Path | None:
        """The PEFT adapter folder of a LoRA policy (None otherwise)."""
        return lora.save_adapter(self.model, folder, base_model=base_model) if self.is_lora else None

    def close(self) -> None:
        """Nothing to release: the model lives in this process."""
