"""LoRA on the PyTorch/HF policy (``policy.dtensor_cfg.lora_cfg``, NeMo-RL's keys), built with ``peft``.

What changes when ``lora_cfg.enabled`` is true:

* every selected ``nn.Linear`` ``W`` becomes ``W x + (alpha / dim) · B A x`` with ``A [dim, in]`` and
  ``B [out, dim] = 0`` at the start (so step 0 is the SFT policy), and only ``A``/``B`` are trainable: the
  optimizer is built over them alone, which is where the memory goes (no gradients or Adam moments of ``W``);
* step checkpoints hold the adapter tensors only (the base is the run's fingerprinted initial policy);
* generation, the ``checkpoint_megatron`` artifact and the HF export use the *merged* weights
  ``W + (alpha / dim) · B A`` (:func:`merged_state_dict`), and the adapter is also written as a PEFT folder
  (:func:`save_adapter`) that ``peft.PeftModel.from_pretrained(base, folder)`` loads.

Key by key (NeMo-RL defaults in brackets):

* ``dim`` [8], ``alpha`` [32]: rank and scale ``alpha / dim``.
* ``match_all_linear`` [true]: every linear layer of the decoder; the output head is left out, because with tied
  embeddings merging a delta into it would change the input embedding too. With it true, ``target_modules`` must
  be empty (upstream silently ignores them; here that is an error).
* ``target_modules`` [[]], ``exclude_modules`` [[]]: names of linear modules, either the last component
  (``q_proj``) or a glob over the full name (``*.layers.0.*.q_proj``); a pattern that matches nothing is an error.
* ``lora_A_init`` [xavier]: ``xavier`` = Xavier-normal ``A``, ``uniform`` = Kaiming-uniform (``a = sqrt(5)``,
  ``nn.Linear``'s own init). Each ``A`` is drawn from a generator seeded by its module name, so every
  data-parallel rank and every re-run builds the same adapter without touching the global RNG stream.
* ``dropout`` [0.0], ``dropout_position`` [post]: must be 0. The policy is kept in eval mode so that the ratio to
  ``prev_logprobs`` is exactly 1 before the first update; LoRA dropout would never be applied. With dropout 0 the
  position has no effect, so both values are accepted.
* ``use_triton`` [true]: NeMo-RL's Triton LoRA kernels (GPU speed only). rlvr has none; peft's PyTorch layers
  compute the same function, so both values are accepted and the choice changes nothing but speed.

The megatron-core backend has no LoRA here, and neither have data-parallel Ray workers (LoRA runs in one
process, CPU or one GPU): both are refused at config time by :func:`check_lora_config`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlvr.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    import torch

KEY = "policy.dtensor_cfg.lora_cfg"
ADAPTER = "default"  # peft's adapter name; one adapter per policy
_INITS = ("xavier", "uniform")
_HEAD_NAMES = ("lm_head", "output_layer")  # never adapted: see the module docstring


@dataclass(frozen=True)
class LoraSettings:
    """The honoured part of ``lora_cfg``, validated."""

    dim: int = 8
    alpha: float = 32.0
    target_modules: tuple[str, ...] = ()
    exclude_modules: tuple[str, ...] = ()
    match_all_linear: bool = True
    lora_A_init: str = "xavier"

    @property
    def scale(self) -> float:
        return self.alpha / self.dim


def lora_section(policy_cfg: Mapping[str, Any]) -> Mapping[str, Any]:
    return policy_cfg["dtensor_cfg"]["lora_cfg"]


def lora_settings(policy_cfg: Mapping[str, Any]) -> LoraSettings | None:
    """The settings of an enabled ``lora_cfg`` (complete, as the loader fills it), else None; a value rlvr cannot
    honour is a ConfigError."""
    section = lora_section(policy_cfg)
    if not section["enabled"]:
        return None
    dim, alpha = section["dim"], section["alpha"]
    if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
        raise ConfigError(f"{KEY}.dim must be an integer >= 1 (the LoRA rank), got {dim!r}")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        raise ConfigError(f"{KEY}.alpha must be a number > 0 (the scale is alpha/dim), got {alpha!r}")
    dropout = section["dropout"]
    if dropout:
        raise ConfigError(
            f"{KEY}.dropout={dropout}: rlvr keeps the policy in eval mode (the PPO ratio must be "
            f"exactly 1 before the first update), so LoRA dropout would never apply; set "
            f"{KEY}.dropout=0.0"
        )
    if section["dropout_position"] not in ("pre", "post"):
        raise ConfigError(f"{KEY}.dropout_position must be 'pre' or 'post', got {section['dropout_position']!r}")
    init = section["lora_A_init"]
    if init not in _INITS:
        raise ConfigError(f"{KEY}.lora_A_init must be one of {list(_INITS)}, got {init!r}")
    targets = tuple(str(t) for t in section["target_modules"])
    match_all = bool(section["match_all_linear"])
    if match_all and targets:
        raise ConfigError(
            f"{KEY}: match_all_linear=true adapts every linear layer, so target_modules={list(targets)} "
            f"would be ignored; set {KEY}.match_all_linear=false to adapt only those modules, or "
            f"{KEY}.target_modules=[]"
        )
    if not match_all and not targets:
        raise ConfigError(
            f"{KEY}: match_all_linear=false and target_modules is empty, so nothing would train; "
            f"name modules (e.g. {KEY}.target_modules=[q_proj,v_proj]) or set match_all_linear=true"
        )
    return LoraSettings(
        dim=dim,
        alpha=float(alpha),
        target_modules=targets,
        exclude_modules=tuple(str(t) for t in section["exclude_modules"]),
        match_all_linear=match_all,
        lora_A_init=init,
    )


def check_lora_config(cfg: Mapping[str, Any]) -> None:
    """Config-time check (before any compute): the LoRA keys, and no LoRA on the megatron-core backend."""
    policy = cfg["policy"]
    if lora_settings(policy) is None:
        return
    if policy["megatron_cfg"]["enabled"]:
        raise ConfigError(
            f"{KEY}.enabled=true needs the PyTorch/HF policy backend: LoRA is not implemented on "
            f"megatron-core here. Set policy.megatron_cfg.enabled=false and "
            f"policy.dtensor_cfg.enabled=true, or {KEY}.enabled=false"
        )
    from rlvr.config.checks import data_parallel_workers

    workers = data_parallel_workers(cfg["cluster"])
    if workers > 1:
        raise ConfigError(
            f"{KEY}.enabled=true runs in one process for now (one GPU, or the CPU), but the cluster "
            f"section asks for {workers} data-parallel policy workers; set cluster.num_nodes=1 and "
            f"cluster.gpus_per_node to 1 (or 0 with cluster.num_workers=1)"
        )


def _matches(name: str, pattern: str) -> bool:
    """``pattern`` is the module's last name component (``q_proj``) or a glob over its full name."""
    return name.rsplit(".", 1)[-1] == pattern or fnmatchcase(name, pattern)


def select_target_modules(model: torch.nn.Module, settings: LoraSettings) -> list[str]:
    """Full names of the linear modules to adapt; an unmatched pattern or an empty selection is a ConfigError."""
    import torch

    linears = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] not in _HEAD_NAMES
    ]
    for key, patterns in (("target_modules", settings.target_modules), ("exclude_modules", settings.exclude_modules)):
        for pattern in patterns:
            if not any(_matches(name, pattern) for name in linears):
                short = sorted({n.rsplit(".", 1)[-1] for n in linears})
                raise ConfigError(
                    f"{KEY}.{key}: {pattern!r} matches no linear layer of the policy; its linear "
                    f"layers are named {short} (a last component, or a glob over the full name)"
                )
    chosen = [n for n in linears if settings.match_all_linear or any(_matches(n, p) for p in settings.target_modules)]
    chosen = [n for n in chosen if not any(_matches(n, p) for p in settings.exclude_modules)]
    if not chosen:
        raise ConfigError(f"{KEY}: exclude_modules={list(settings.exclude_modules)} leaves no layer to adapt")
    return chosen


def apply_lora(model: torch.nn.Module, settings: LoraSettings) -> torch.nn.Module:
    """Wrap ``model`` (modified in place, as peft does) so that only the adapters are trainable."""
    from peft import LoraConfig, get_peft_model

    targets = select_target_modules(model, settings)
    config = LoraConfig(
        r=settings.dim,
        lora_alpha=settings.alpha,
        lora_dropout=0.0,
        target_modules=targets,
        bias="none",
        init_lora_weights=True,
    )
    peft_model = get_peft_model(model, config)
    _init_lora_a(peft_model, settings.lora_A_init)
    return peft_model


def _init_lora_a(model: torch.nn.Module, init: str) -> None:
    """Re-draw every ``A`` (``B`` stays 0) from a generator seeded by the module name; see the docstring."""
    import torch

    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".lora_A." not in name:
                continue
            generator = torch.Generator().manual_seed(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))
            weight = torch.empty(param.shape, dtype=torch.float32)
            if init == "xavier":
                torch.nn.init.xavier_normal_(weight, generator=generator)
            else:
                torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
            param.copy_(weight)


def is_lora_model(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable adapter tensors by parameter name (what a step checkpoint holds)."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def load_adapter_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Restore :func:`adapter_state`; a checkpoint of another shape or selection is a CheckpointError."""
    import torch

    own = dict(model.named_parameters())
    expected = {n for n, p in own.items() if p.requires_grad}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state))[:3], sorted(set(state) - expected)[:3]
        raise CheckpointError(
            f"the checkpoint does not hold this policy's LoRA adapter (missing {missing}, "
            f"unexpected {extra}); it was written with another {KEY}"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            if own[name].shape != tensor.shape:
                raise CheckpointError(
                    f"checkpoint adapter tensor {name} has shape {tuple(tensor.shape)}, the policy "
                    f"{tuple(own[name].shape)}: another {KEY}.dim?"
                )
            own[name].copy_(tensor)


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base model's state dict (plain HF names) with every adapted weight replaced by ``W + scale · B A``.

    The model is not modified: merging in place and unmerging after would leave rounding residue in ``W``.
    """
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    for name, tensor in base.state_dict().items():
        if ".lora_" not in name:
            merged[name.replace(".base_layer.", ".")] = tensor.detach()
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and ADAPTER in module.lora_A:
            weight = module.get_base_layer().weight.detach()
            merged[f"{name}.weight"] = weight + module.get_delta_weight(ADAPTER).to(weight.dtype)
    return merged


def merged_model(model: torch.nn.Module) -> torch.nn.Module:
    """A plain transformers model holding :func:`merged_state_dict` (a copy; the policy keeps training)."""
    plain = copy.deepcopy(model).unload()  # peft's LoRA layers removed, base weights untouched
    plain.load_state_dict(merged_state_dict(model), strict=True)
    return plain


def save_adapter(model: torch.nn.Module, folder: Path, *, base_model: str | None) -> Path:
    """Write the PEFT adapter folder (``adapter_config.json``, ``adapter_model.safetensors``).

    ``base_model`` (recorded as ``base_model_name_or_path``) is the policy the run started from; the adapter
    applies to those weights (``PeftModel.from_pretrained(base, folder)``).
    """
    from rlvr.utils.atomic import atomic_dir

    model.peft_config[ADAPTER].base_model_name_or_path = base_model
    with atomic_dir(Path(folder)) as tmp:
        model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "rlvr_lora.json").write_text(
            json.dumps(
                {
                    "base_model": base_model,
                    "merged_into": "checkpoint_megatron and the HF export",
                    "load": "peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), this folder)",
                },
                indent=2,
            )
        )
    return Path(folder)
