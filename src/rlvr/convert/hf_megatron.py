"""The two convert steps (``convert/hf_to_megatron``, ``convert/megatron_to_hf``) and in-memory bridges to HF.

Config keys follow the upstream steps: ``hf_model_id`` (a local HF folder; a hub id is fetched only where a hub
is reachable), ``megatron_path`` (a ``checkpoint_megatron`` root or ``iter_*`` folder), ``hf_path`` (the HF
export folder) and ``torch_dtype`` (float32/bfloat16/float16 or fp32/bf16/fp16).

Weights are read from the HF folder's safetensors (or ``pytorch_model.bin``) files directly, never through a
model constructor, so an HF -> Megatron -> HF round trip moves every value bit for bit; only a requested
``torch_dtype`` cast changes values. Every output folder is written atomically: on any error nothing is left.

Export dtype: a ``checkpoint_megatron`` records the dtype of the HF model it came from (``model.source_dtype`` in
``run_config.yaml``: the ``torch_dtype``/``dtype`` of the user's ``config.json``, else the dtype its weights were
stored in), and carries it through training. ``megatron_to_hf`` writes that dtype unless ``torch_dtype`` asks for
another, so a bf16 model trained in fp32 (``policy.precision``) comes back as bf16, not as the training precision.
Tied embeddings stay tied: one stored tensor, ``tie_word_embeddings`` kept in ``config.json``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from rlvr.errors import CheckpointError, ConfigError
from rlvr.utils.atomic import atomic_dir

from .artifact import (
    TOKENIZER_DIR,
    copy_tokenizer_assets,
    load_checkpoint_megatron,
    make_run_config,
    save_checkpoint_megatron,
)
from .families import get_family
from .state_mapping import hf_to_mcore_state, mcore_to_hf_state

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}
# What a hub download fetches: configs, weights in safetensors, tokenizer assets.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]


def parse_torch_dtype(name: str | torch.dtype) -> torch.dtype:
    """``torch_dtype`` config value -> ``torch.dtype``; an unknown name is a ConfigError listing the known ones."""
    if isinstance(name, torch.dtype):
        return name
    key = str(name).lower().removeprefix("torch.")
    if key not in DTYPES:
        raise ConfigError(f"torch_dtype: unknown dtype {name!r}; known: {', '.join(DTYPES)}")
    return DTYPES[key]


def hf_config_dict(config: Any) -> dict[str, Any]:
    """A ``PretrainedConfig`` as a complete, JSON/YAML-safe dict (defaults included, unlike ``config.json``)."""
    return json.loads(config.to_json_string(use_diff=False))


def hf_config_from_dict(hf_config: Mapping[str, Any]) -> Any:
    """Rebuild the ``PretrainedConfig`` recorded in a run config."""
    from transformers import CONFIG_MAPPING

    model_type = hf_config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise CheckpointError(f"run_config.yaml: model_type {model_type!r} is unknown to this transformers version")
    return CONFIG_MAPPING[model_type].from_dict(dict(hf_config))


def _locate_hf_folder(hf_model_id: str) -> Path:
    """A local folder for ``hf_model_id``: the folder itself, or a hub snapshot where a hub is reachable."""
    path = Path(hf_model_id).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"hf_model_id: {path} is a file; expected an HF model folder")
        return path
    looks_local = hf_model_id.startswith(("/", ".", "~")) or hf_model_id.count("/") > 1
    if looks_local:
        raise CheckpointError(f"hf_model_id: folder {path} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(hf_model_id, allow_patterns=_HUB_PATTERNS))
    except Exception as exc:  # offline, unknown repo, gated repo: all mean "not available here"
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"hf_model_id: {hf_model_id!r} is not an existing folder, and fetching it from the Hugging Face hub "
            f"failed ({type(exc).__name__}: {first_line}); give the path of a local HF model folder"
        ) from exc


def _weight_files(folder: Path) -> list[Path]:
    """The weight files of an HF folder: sharded (index) or single, safetensors preferred over ``.bin``."""
    for index_name, single_name in (
        ("model.safetensors.index.json", "model.safetensors"),
        ("pytorch_model.bin.index.json", "pytorch_model.bin"),
    ):
        if (folder / index_name).is_file():
            weight_map = json.loads((folder / index_name).read_text()).get("weight_map", {})
            return [folder / name for name in sorted(set(weight_map.values()))]
        if (folder / single_name).is_file():
            return [folder / single_name]
    raise CheckpointError(
        f"{folder}: no model weights (expected model.safetensors, a model.safetensors.index.json with its "
        "shards, or pytorch_model.bin)"
    )


def declared_dtype(raw_config: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> torch.dtype:
    """The dtype of an HF model as its ``config.json`` declares it (``dtype`` in transformers >= 4.56, else
    ``torch_dtype``); without a usable declaration (missing, ``"auto"``), the dtype its weights are stored in."""
    for key in ("dtype", "torch_dtype"):
        name = raw_config.get(key)
        if isinstance(name, str) and name.lower().removeprefix("torch.") in DTYPES:
            return DTYPES[name.lower().removeprefix("torch.")]
    return next((t.dtype for t in state.values() if t.is_floating_point()), torch.float32)


def export_dtype(run_config: Mapping[str, Any]) -> torch.dtype:
    """The dtype an HF export of a checkpoint is written in by default: the recorded source model's dtype.
    Checkpoints written before it was recorded fall back to the HF config's dtype, then to ``params_dtype``."""
    model = run_config.get("model") or {}
    hf_config = model.get("hf_config") or {}
    for name in (
        model.get("source_dtype"),
        hf_config.get("dtype"),
        hf_config.get("torch_dtype"),
        model.get("params_dtype"),
    ):
        if isinstance(name, str) and name.lower().removeprefix("torch.") in DTYPES:
            return DTYPES[name.lower().removeprefix("torch.")]
    return torch.float32


def check_hf_folder(folder: Path, *, trainable: bool) -> None:
    """Config-time check of a local HF folder, reading no weights: its ``config.json`` names a supported family
    and, with ``trainable``, the megatron-core model builder can compute it (RoPE type, soft-capping, ...)."""
    config_file = folder / "config.json"
    try:
        raw = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file}: not valid JSON: {exc}") from exc
    get_family(raw, source=str(config_file))
    if trainable:
        from transformers import AutoConfig

        from .mcore_model import check_buildable

        try:
            # Through transformers, so its defaults (layer_types, nested RoPE parameters) are filled in.
            hf_config = hf_config_dict(AutoConfig.from_pretrained(folder))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{config_file}: transformers cannot read it: {exc}") from exc
        check_buildable(hf_config, source=str(config_file))


def read_hf_folder(folder: Path, dtype: torch.dtype) -> tuple[dict[str, Any], dict[str, torch.Tensor], torch.dtype]:
    """``(hf_config dict, state, declared dtype)`` of a local HF causal-LM folder, floating tensors cast to
    ``dtype``; the declared dtype (see :func:`declared_dtype`) is what an export goes back to."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder}: not an HF model folder (no config.json)")
    try:
        raw = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file}: not valid JSON: {exc}") from exc
    get_family(raw, source=str(config_file))  # an unsupported architecture fails before any weight is read
    hf_config = hf_config_dict(AutoConfig.from_pretrained(folder))
    state: dict[str, torch.Tensor] = {}
    for file in _weight_files(folder):
        if not file.is_file():
            raise CheckpointError(f"{file}: listed in the weight index but missing")
        try:
            if file.suffix == ".safetensors":
                part = load_file(file)
            else:
                part = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"{file}: cannot read the weights: {exc}") from exc
        state.update(part)
    source_dtype = declared_dtype(raw, state)
    return hf_config, {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}, source_dtype


def hf_to_megatron(hf_model_id: str, megatron_path: str, torch_dtype: str = "float32") -> Path:
    """Convert an HF folder of a supported family (:mod:`.families`) into a fresh ``checkpoint_megatron`` root
    (``iter_0000000``, trackers ``0``, tokenizer assets). An existing ``megatron_path`` is replaced only once
    the new one is complete."""
    dtype = parse_torch_dtype(torch_dtype)
    folder = _locate_hf_folder(hf_model_id)
    hf_config, hf_state, source_dtype = read_hf_folder(folder, dtype)
    mcore_state = hf_to_mcore_state(hf_state, hf_config, source=str(folder))
    source_id = str(folder.resolve()) if Path(hf_model_id).expanduser().exists() else hf_model_id
    run_config = make_run_config(hf_config, hf_model_id=source_id, params_dtype=dtype, source_dtype=source_dtype)
    root = Path(megatron_path)
    with atomic_dir(root) as tmp:
        save_checkpoint_megatron(tmp, mcore_state, run_config=run_config, tokenizer_dir=folder, iteration=0)
    return root


def _hf_model_and_dir(
    path: str | Path, torch_dtype: str | torch.dtype | None, *, default_to_source: bool = False
) -> tuple[Any, Path]:
    """The HF model of a checkpoint and the iteration folder it came from. Without ``torch_dtype`` the model has
    the checkpoint's tensor dtype, or with ``default_to_source`` the source model's (:func:`export_dtype`)."""
    from transformers import AutoModelForCausalLM

    state, run_config, iter_dir = load_checkpoint_megatron(path)
    hf_config = run_config["model"]["hf_config"]
    hf_state = mcore_to_hf_state(state, hf_config, source=str(iter_dir))
    if torch_dtype is not None:
        dtype = parse_torch_dtype(torch_dtype)
    elif default_to_source:
        dtype = export_dtype(run_config)
    else:
        dtype = state["embedding.word_embeddings.weight"].dtype
    model = AutoModelForCausalLM.from_config(hf_config_from_dict(hf_config), dtype=dtype)
    try:
        model.load_state_dict(hf_state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{iter_dir}: weights do not fit {type(model).__name__}: {exc}") from exc
    return model.eval(), iter_dir


def load_hf_model_from_megatron(path: str | Path, torch_dtype: str | torch.dtype | None = None) -> Any:
    """An in-memory HF ``PreTrainedModel`` (eval mode) with the weights of a ``checkpoint_megatron`` root or
    ``iter_*`` folder; ``torch_dtype`` ``None`` keeps the checkpoint's dtype."""
    return _hf_model_and_dir(path, torch_dtype)[0]


def megatron_to_hf(
    megatron_path: str, hf_path: str, torch_dtype: str | None = None, hf_model_id: str | None = None
) -> Path:
    """Export a ``checkpoint_megatron`` as an HF folder (``config.json``, ``model.safetensors``, tokenizer files)
    loadable with ``AutoModelForCausalLM.from_pretrained``, in ``torch_dtype`` or by default the source model's
    dtype. Tokenizer files come from ``hf_model_id`` (a local folder) when given, else from the checkpoint's own
    ``tokenizer/``."""
    model, iter_dir = _hf_model_and_dir(megatron_path, torch_dtype, default_to_source=True)
    tokenizer_source = _locate_hf_folder(hf_model_id) if hf_model_id else iter_dir / TOKENIZER_DIR
    target = Path(hf_path)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        if tokenizer_source.is_dir():
            # After save_pretrained, so the source's generation_config.json wins over the derived one.
            copy_tokenizer_assets(tokenizer_source, tmp)
    return target


def save_hf_model_as_megatron(
    model: Any,
    tokenizer_dir: str | Path | None,
    root: str | Path,
    iteration: int = 0,
    run_config_extra: Mapping[str, Any] | None = None,
    *,
    train_state: dict[str, Any] | None = None,
    hf_model_id: str | None = None,
    source_dtype: str | torch.dtype | None = None,
) -> Path:
    """Save an in-memory HF model as iteration ``iteration`` of the ``checkpoint_megatron`` at ``root`` (created if
    missing, else extended); returns the iteration folder. ``hf_model_id`` defaults to the model's
    ``name_or_path``; ``source_dtype`` (the dtype the export goes back to) to the model's own dtype. A tied
    model's output weight is its embedding, so it is stored once (megatron-core shares it the same way)."""
    hf_config = hf_config_dict(model.config)
    if not hf_config.get("architectures"):
        hf_config["architectures"] = [type(model).__name__]
    hf_state = model.state_dict()
    mcore_state = hf_to_mcore_state(hf_state, hf_config, source=f"in-memory {type(model).__name__}")
    run_config = make_run_config(
        hf_config,
        hf_model_id=hf_model_id or getattr(model.config, "name_or_path", None) or None,
        params_dtype=mcore_state["embedding.word_embeddings.weight"].dtype,
        source_dtype=parse_torch_dtype(source_dtype) if source_dtype is not None else None,
        extra=run_config_extra,
    )
    return save_checkpoint_megatron(
        root,
        mcore_state,
        run_config=run_config,
        tokenizer_dir=tokenizer_dir,
        iteration=iteration,
        train_state=train_state,
    )
