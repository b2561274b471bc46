"""Train / validation overlap: validating on training prompts measures memorisation, not learning.

Two checks. Before any row is read, a validation file that *is* a training file (the same path, or a copy with
the same bytes) is refused unless ``data.allow_overlap: true``: that is almost always a configuration slip (one
path pasted twice). After templating, the validation prompts that also appear in training are counted (the
de-duplication key of :mod:`rlvr.data.prep`, so a prompt file or chat template applies to both sides), written
to the data card's ``overlap`` section and logged as a warning when not zero; distinct files that share some
prompts are reported, never refused.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from rlvr.data.config import DataPlan
from rlvr.data.reader import sha256_of
from rlvr.errors import ConfigError

logger = logging.getLogger("rlvr.data")


def _same_file(a: str, b: str, digests: dict[str, str]) -> bool:
    """Same path, or the same size and SHA-256 (a copy); digests are cached, sizes compared first."""
    try:
        if os.path.samefile(a, b):
            return True
        if Path(a).stat().st_size != Path(b).stat().st_size:
            return False
    except OSError:
        return False
    for path in (a, b):
        if path not in digests:
            digests[path] = sha256_of(path)
    return digests[a] == digests[b]


def same_file_pairs(plan: DataPlan) -> list[tuple[str, str]]:
    """``(validation key, train key)`` pairs whose files are the same file or byte-identical copies."""
    digests: dict[str, str] = {}
    return [
        (val.key, train.key)
        for val in plan.validation
        for train in plan.train
        if _same_file(val.data_path, train.data_path, digests)
    ]


def check_same_files(plan: DataPlan) -> list[tuple[str, str]]:
    """Refuse a validation file equal to a training file unless ``data.allow_overlap``; return the pairs."""
    pairs = same_file_pairs(plan)
    if pairs and not plan.allow_overlap:
        specs = {spec.key: spec for spec in plan.train + plan.validation}
        val_key, train_key = pairs[0]
        raise ConfigError(
            f"{val_key}.data_path={specs[val_key].data_path!r} is the same file as {train_key}.data_path="
            f"{specs[train_key].data_path!r}: validation would score prompts the policy trains on. Give a held-out "
            f"file, or drop {val_key} and set {train_key}.split_validation_size, or set data.allow_overlap: true "
            "to validate on training prompts on purpose"
        )
    return pairs


def overlap_record(val_prompts_in_train: int, val_rows: int, pairs: list[tuple[str, str]], allowed: bool) -> dict:
    """The data card's ``overlap`` section; logs a warning when validation prompts are also trained on."""
    if val_prompts_in_train:
        logger.warning(
            "warning: %d of the %d validation prompts also appear in the training set%s; validation accuracy on "
            "them measures memorisation",
            val_prompts_in_train,
            val_rows,
            f" (same file: {', '.join(f'{v} = {t}' for v, t in pairs)}; data.allow_overlap is true)" if pairs else "",
        )
    return {
        "validation_prompts_in_train": val_prompts_in_train,
        "validation_rows": val_rows,
        "fraction": round(val_prompts_in_train / val_rows, 4) if val_rows else 0.0,
        "same_files": [{"validation": v, "train": t} for v, t in pairs],
        "allow_overlap": allowed,
    }
