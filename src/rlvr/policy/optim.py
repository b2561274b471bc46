"""Optimizer and LR scheduler from the upstream ``policy.optimizer`` / ``policy.scheduler`` config forms.

``policy.optimizer`` is ``{name: torch.optim.AdamW, kwargs: {lr, weight_decay, betas, eps, foreach, fused}}``.
``policy.scheduler`` is either null (constant LR), one ``{name, kwargs}`` mapping, or NeMo-RL's list form: any
number of ``{name, kwargs}`` entries plus one ``{milestones: [...]}`` entry, which becomes a
``torch.optim.lr_scheduler.SequentialLR``. Names are dotted paths resolved only inside ``torch.optim`` (a config
must not be able to import arbitrary code); a bare class name (``AdamW``) is accepted too.

Adam and AdamW run their fused kernel (``fused=True``) unless the kwargs name ``fused`` or ``foreach``: torch
itself falls back to a Python loop over the parameters on the CPU, which took 3-6x the fused step's time on the
20M benchmark model (46-88 ms against 15 ms per step); the fused update equals the loop's up to float rounding
(``tests/unit/policy/test_optim.py``). Parameters that are not plain floating tensors on a CPU or a GPU (FSDP's
DTensor shards, for example) keep torch's own choice.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch.optim import lr_scheduler

from rlvr.errors import ConfigError


def _known(module: Any, base: type) -> list[str]:
    return sorted(
        name
        for name, obj in vars(module).items()
        if inspect.isclass(obj) and issubclass(obj, base) and obj is not base and not name.startswith("_")
    )


def _resolve(name: str, module: Any, prefix: str, base: type, key: str) -> type:
    """Class ``name`` (``prefix.Class`` or ``Class``) from ``module``, which must subclass ``base``."""
    short = name[len(prefix) + 1 :] if name.startswith(prefix + ".") else name
    cls = getattr(module, short, None) if "." not in short else None
    if not (inspect.isclass(cls) and issubclass(cls, base) and cls is not base):
        raise ConfigError(
            f"{key}: {name!r} is not a {prefix} class; known: {[f'{prefix}.{n}' for n in _known(module, base)]}"
        )
    return cls


def _construct(cls: type, first: Any, kwargs: Mapping[str, Any] | None, key: str) -> Any:
    kwargs = dict(kwargs or {})
    if "betas" in kwargs and isinstance(kwargs["betas"], list):
        kwargs["betas"] = tuple(kwargs["betas"])  # YAML gives a list; some optimizers check for a tuple
    accepted = inspect.signature(cls.__init__).parameters
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        raise ConfigError(
            f"{key}.kwargs: {unknown} not accepted by {cls.__module__}.{cls.__name__}; accepted: "
            f"{[p for p in accepted if p not in ('self', 'params', 'optimizer')]}"
        )
    try:
        return cls(first, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: {cls.__name__}({kwargs}) failed: {exc}") from exc


def build_optimizer(params: Iterable[torch.nn.Parameter], cfg: Mapping[str, Any] | None) -> torch.optim.Optimizer:
    """The optimizer named by ``policy.optimizer`` (default ``torch.optim.AdamW`` with its defaults)."""
    cfg = cfg or {"name": "torch.optim.AdamW", "kwargs": {}}
    if "name" not in cfg:
        raise ConfigError("policy.optimizer.name is required (e.g. torch.optim.AdamW)")
    cls = _resolve(str(cfg["name"]), torch.optim, "torch.optim", torch.optim.Optimizer, "policy.optimizer.name")
    params = list(params)
    kwargs = dict(cfg.get("kwargs") or {})
    if cls in (torch.optim.Adam, torch.optim.AdamW) and not {"fused", "foreach"} & kwargs.keys() and _fusable(params):
        kwargs["fused"] = True
    return _construct(cls, params, kwargs, "policy.optimizer")


def _fusable(params: list[torch.nn.Parameter]) -> bool:
    """Whether torch's fused Adam kernel takes these parameters: plain floating tensors on a CPU or a GPU."""
    return bool(params) and all(
        type(p) in (torch.Tensor, torch.nn.Parameter) and p.is_floating_point() and p.device.type in ("cpu", "cuda")
        for p in params
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any] | Sequence[Any] | None
) -> lr_scheduler.LRScheduler | None:
    """The scheduler of ``policy.scheduler`` (see the module docstring), or None for a constant LR."""
    if cfg is None:
        return None
    if isinstance(cfg, Mapping):
        return _one_scheduler(optimizer, cfg, "policy.scheduler")
    entries = [e for e in cfg if "milestones" not in e]
    milestone_entries = [e for e in cfg if "milestones" in e]
    if len(milestone_entries) > 1:
        raise ConfigError("policy.scheduler: more than one {milestones: [...]} entry")
    milestones = list(milestone_entries[0]["milestones"]) if milestone_entries else []
    if not entries:
        return None
    schedulers = [_one_scheduler(optimizer, e, f"policy.scheduler[{i}]") for i, e in enumerate(entries)]
    if len(schedulers) == 1 and not milestones:
        return schedulers[0]
    if len(milestones) != len(schedulers) - 1:
        raise ConfigError(
            f"policy.scheduler: {len(schedulers)} schedulers need {len(schedulers) - 1} milestones, got {milestones}"
        )
    return lr_scheduler.SequentialLR(optimizer, schedulers=schedulers, milestones=milestones)


def _one_scheduler(optimizer: torch.optim.Optimizer, entry: Mapping[str, Any], key: str) -> lr_scheduler.LRScheduler:
    if "name" not in entry:
        raise ConfigError(
            f"{key}: each entry needs a name (e.g. torch.optim.lr_scheduler.LinearLR) "
            f"or milestones, got keys {sorted(entry)}"
        )
    cls = _resolve(
        str(entry["name"]), lr_scheduler, "torch.optim.lr_scheduler", lr_scheduler.LRScheduler, f"{key}.name"
    )
    if cls in (lr_scheduler.SequentialLR, lr_scheduler.ChainedScheduler, lr_scheduler.ReduceLROnPlateau):
        # Sequential/Chained are what the list form builds; ReduceLROnPlateau needs a metric at every step.
        raise ConfigError(f"{key}.name: {cls.__name__} cannot be named here; use the list form for sequences")
    return _construct(cls, optimizer, entry.get("kwargs"), key)
