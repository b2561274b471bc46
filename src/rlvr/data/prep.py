"""The ``data_prep/rl_prep`` step: user JSONL in, canonical ``train.jsonl`` / ``val.jsonl`` and a data card out.

Order of work, chosen so that the output is a pure function of the input files and the config (byte-identical
across runs) and so that a failure leaves nothing behind:

1. resolve ``data:`` (:mod:`rlvr.data.config`), load the tokenizer and the prompt files: config errors first;
2. read every file through its format (:mod:`rlvr.data.formats`, :mod:`rlvr.data.gym`); bad lines are collected
   over all files and reported together (:class:`rlvr.errors.DataError`);
3. template prompts; drop exact duplicate prompts within the training set (first occurrence kept, in file
   order), then split ``split_validation_size`` rows of each train entry off to validation (a seeded sample of
   the entry's unique rows, both parts kept in file order); validation rows are de-duplicated among themselves;
   validation prompts also present in training are counted (not dropped: a run may validate on its train file);
4. count prompt tokens; with ``max_input_seq_length`` set, rows whose prompt has at least that many tokens are
   rejected (NeMo-RL would keep them with a 4-token stub prompt and ``loss_multiplier = 0``: rollouts that train
   nothing), counted under ``rejects.prompt_too_long``;
5. write the three files (and ``tokenizer/`` when the chat template used is not the tokenizer's own, see
   :mod:`rlvr.data.chat_template`) into a temporary folder renamed over ``out_dir`` only when all succeeded.

Duplicate keys: the prompt text for math / code rows; the canonical JSON of ``responses_create_params`` for Gym
rows (their prompt text without a tokenizer is only the last user turn).
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
from collections.abc import Iterator
from pathlib import Path

from rlvr.data.card import build_card, encode_card, split_summary
from rlvr.data.chat_template import check_template_kwargs, write_tokenizer_with_template
from rlvr.data.config import DataPlan, DatasetSpec, resolve_data_config
from rlvr.data.formats import RowFormat, choose_format
from rlvr.data.gym import chat_turns
from rlvr.data.overlap import check_same_files, overlap_record
from rlvr.data.prompts import PromptBuilder, build_prompt_builder, load_tokenizer
from rlvr.data.reader import Dataset, ProblemLog, first_object, read_dataset, sha256_of
from rlvr.data.rows import encode_row
from rlvr.errors import ConfigError, DataError
from rlvr.utils.atomic import atomic_dir

OUTPUT_FILES = ("train.jsonl", "val.jsonl", "data_card.json")
#: Written only when the chat template used is not the tokenizer's own (see :mod:`rlvr.data.chat_template`).
TOKENIZER_OUTPUT = "tokenizer"


def prepare_rl_data(
    data_cfg: dict,
    *,
    out_dir: Path,
    tokenizer_dir: Path | None,
    seed: int,
    max_input_seq_length: int | None = None,
    chat_template: object = None,
    chat_template_kwargs: object = None,
    template_key: str = "chat_template",
) -> dict:
    """Validate, normalise and template the configured datasets; write ``out_dir/{train,val}.jsonl`` and the card.

    ``data_cfg`` is the ``data:`` section (NeMo-RL keys); ``max_input_seq_length`` overrides
    ``data.max_input_seq_length``. ``chat_template`` / ``chat_template_kwargs`` are ``policy.tokenizer``'s (see
    :mod:`rlvr.data.chat_template`); ``template_key`` is how messages name the template's config key. Returns the
    data card. Raises :class:`ConfigError` / :class:`DataError`.
    """
    with _gc_paused():
        return _prepare(
            data_cfg,
            out_dir=Path(out_dir),
            tokenizer_dir=tokenizer_dir,
            seed=seed,
            max_input_seq_length=max_input_seq_length,
            template=(chat_template, chat_template_kwargs, template_key),
        )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while millions of row dicts are alive.

    Rows hold no reference cycles, yet each full collection walks every live row: with a million rows that is
    about a tenth of the step's time for nothing. Reference counting still frees everything as usual.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _prepare(
    data_cfg: dict,
    *,
    out_dir: Path,
    tokenizer_dir: Path | None,
    seed: int,
    max_input_seq_length: int | None,
    template: tuple,
) -> dict:
    """The body of :func:`prepare_rl_data` (see the module docstring for the order of work)."""
    plan = resolve_data_config(data_cfg, seed=seed)
    same_files = check_same_files(plan)
    limit = _length_limit(max_input_seq_length, data_cfg)
    chat_template, kwargs, template_key = template
    kwargs = check_template_kwargs(kwargs, f"{template_key}_kwargs")
    tokenizer, new_template = None, False
    if tokenizer_dir is not None:
        tokenizer, new_template = load_tokenizer(tokenizer_dir, chat_template, template_key)
    elif chat_template is not None:
        raise ConfigError(
            f"{template_key}={chat_template!r} needs a tokenizer to apply it to; pass the tokenizer "
            f"folder or set {template_key} to null"
        )
    builders = {
        spec.key: build_prompt_builder(
            spec, tokenizer, template_kwargs=kwargs, template_key=template_key, tokenizer_dir=tokenizer_dir
        )
        for spec in plan.train + plan.validation
    }
    loaded = _read_all(plan)
    train_rows, val_rows, sources = _assemble(plan, loaded, builders)

    train_rows, train_rejects = _apply_length_limit(train_rows, tokenizer, limit)
    val_rows, val_rejects = _apply_length_limit(val_rows, tokenizer, limit)
    train_keys = {_key(row, row["task_name"]) for row in train_rows}
    in_train = sum(1 for row in val_rows if _key(row, row["task_name"]) in train_keys)
    val_source = _validation_source(plan.validation, any(spec.split_validation_size for spec in plan.train))
    _check_not_empty(train_rows, val_rows, val_source, sources, train_rejects, val_rejects)

    train_card = split_summary(
        train_rows, duplicates=sum(s["duplicates"] for s in sources if s["role"] == "train"), rejects=train_rejects
    )
    val_card = split_summary(
        val_rows, duplicates=sum(s["duplicates"] for s in sources if s["role"] == "validation"), rejects=val_rejects
    )
    val_card.update(source=val_source, prompts_in_train=in_train)
    card = build_card(
        sources=sources,
        train=train_card,
        validation=val_card,
        seed=seed,
        tokenizer=None if tokenizer_dir is None else str(tokenizer_dir),
        max_input_seq_length=limit,
    )
    card["overlap"] = overlap_record(in_train, len(val_rows), same_files, plan.allow_overlap)
    card["chat_template"] = _template_summary(tokenizer, new_template, chat_template, kwargs)
    card["length_check"] = (
        "off (no max_input_seq_length)"
        if limit is None
        else "skipped (no tokenizer)"
        if tokenizer is None
        else "prompts with >= max_input_seq_length tokens rejected"
    )
    with atomic_dir(out_dir) as tmp:
        _write_jsonl(tmp / "train.jsonl", train_rows)
        _write_jsonl(tmp / "val.jsonl", val_rows)
        (tmp / "data_card.json").write_text(encode_card(card), encoding="utf-8")
        if new_template and tokenizer.chat_template:
            write_tokenizer_with_template(Path(tokenizer_dir), tmp / TOKENIZER_OUTPUT, tokenizer.chat_template)
    return card


def _template_summary(tokenizer, new_template: bool, configured: object, kwargs: dict) -> dict | None:
    """How prompts were formatted, for the data card (None without a tokenizer)."""
    if tokenizer is None:
        return None
    if not tokenizer.chat_template:
        source = "none (prompt_file text only)"
    else:
        source = (
            "tokenizer's own"
            if not new_template
            else ("built-in plain template (default)" if configured == "default" else "configured")
        )
    return {
        "source": source,
        "configured": configured,
        "kwargs": kwargs,
        "written_to": f"{TOKENIZER_OUTPUT}/" if new_template and tokenizer.chat_template else None,
    }


def _read_all(plan: DataPlan) -> dict[str, tuple[RowFormat, Dataset]]:
    """Read every dataset through its format; raise one :class:`DataError` for all bad lines of all files."""
    log = ProblemLog()
    loaded: dict[str, tuple[RowFormat, Dataset]] = {}
    for spec in plan.train + plan.validation:
        fmt = choose_format(
            spec.env_name,
            processor=spec.processor,
            dataset_name=spec.dataset_name,
            input_key=spec.input_key,
            output_key=spec.output_key,
            first_row=first_object(spec.data_path),
            default_agent_ref=plan.default_agent_ref,
        )
        loaded[spec.key] = fmt, read_dataset(spec.data_path, fmt, log)
    log.raise_if_any()
    return loaded


def _assemble(plan: DataPlan, loaded: dict, builders: dict) -> tuple[list[dict], list[dict], list[dict]]:
    """``(train rows, validation rows, source records)``: templated, de-duplicated, split (step 3 above)."""
    sources: list[dict] = []
    seen_train: set = set()
    train_rows: list[dict] = []
    val_rows: list[dict] = []
    for spec in plan.train:
        fmt, data = loaded[spec.key]
        kept = _dedupe(_templated(spec, data.rows, builders[spec.key]), seen_train, spec.env_name)
        kept, moved = split_off_validation(kept, spec.split_validation_size, spec.seed, spec.key)
        train_rows += kept
        val_rows += moved
        sources.append(
            _source_record(
                spec, fmt, data, duplicates=len(data.rows) - len(kept) - len(moved), split_to_validation=len(moved)
            )
        )
    seen_val = {_key(row, row["task_name"]) for row in val_rows}
    for spec in plan.validation:
        fmt, data = loaded[spec.key]
        kept = _dedupe(_templated(spec, data.rows, builders[spec.key]), seen_val, spec.env_name)
        val_rows += kept
        sources.append(_source_record(spec, fmt, data, duplicates=len(data.rows) - len(kept), split_to_validation=0))
    return train_rows, val_rows, sources


def _length_limit(argument: int | None, data_cfg: dict) -> int | None:
    limit = argument if argument is not None else data_cfg.get("max_input_seq_length")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"data.max_input_seq_length must be a positive integer or null, got {limit!r}")
    return limit


def _templated(spec: DatasetSpec, rows: list[dict], builder: PromptBuilder) -> list[dict]:
    """Add ``prompt``, ``task_name`` and a null ``prompt_tokens`` to each row (in place); returns ``rows``."""
    if spec.env_name == "nemo_gym":
        turns = [] if builder.tokenizer is None else [chat_turns(r["gym"]["responses_create_params"]) for r in rows]
        prompts = builder.render_turns(turns, [row["problem"] for row in rows])
    else:
        # A messages row's own system turn is used for its prompt only; it is not part of the canonical row.
        systems = [row.pop("system_prompt", None) for row in rows]
        own = [row["source"] for row, text in zip(rows, systems, strict=True) if text is not None]
        if own and not builder.chat:
            raise ConfigError(
                f"{own[0]}: messages[0]: a system turn ({len(own)} row(s) of {spec.key} have one) "
                f"needs a chat template to be placed; {builder.fix} or remove the system turns"
            )
        prompts = builder.render([row["problem"] for row in rows], systems if own else None)
    task = spec.env_name
    for row, prompt in zip(rows, prompts, strict=True):
        row["prompt"] = prompt
        row["task_name"] = task
        row["prompt_tokens"] = None
    return rows


def _key(row: dict, task: str) -> str:
    """What makes two rows duplicates (see the module docstring)."""
    return encode_row(row["gym"]["responses_create_params"]) if task == "nemo_gym" else row["prompt"]


def _dedupe(rows: list[dict], seen: set, task: str) -> list[dict]:
    """Rows whose key is not in ``seen`` yet (first occurrence wins); ``seen`` is updated."""
    kept: list[dict] = []
    append, add = kept.append, seen.add
    if task == "nemo_gym":
        for row in rows:
            key = _key(row, task)
            if key not in seen:
                add(key)
                append(row)
    else:
        for row in rows:
            prompt = row["prompt"]
            if prompt not in seen:
                add(prompt)
                append(row)
    return kept


def split_off_validation(rows: list[dict], size: float | int, seed: int, key: str) -> tuple[list, list]:
    """``(train, validation)``: ``ceil(size * n)`` rows for a fraction, ``size`` rows for a count.

    The rows to move are ``random.Random(seed).sample`` of the positions, so the split depends only on the number
    of rows and the seed; both parts keep the input order.
    """
    count = math.ceil(size * len(rows)) if isinstance(size, float) else size
    if count == 0:
        return rows, []
    if count >= len(rows):
        raise DataError(
            f"{key}.split_validation_size={size} takes {count} of the {len(rows)} unique rows, leaving "
            "none to train on; lower it or give data.validation.data_path"
        )
    to_val = bytearray(len(rows))
    for position in random.Random(seed).sample(range(len(rows)), count):
        to_val[position] = 1
    return (
        [row for row, flag in zip(rows, to_val, strict=True) if not flag],
        [row for row, flag in zip(rows, to_val, strict=True) if flag],
    )


def _apply_length_limit(rows: list[dict], tokenizer, limit: int | None) -> tuple[list[dict], dict[str, int]]:
    """Fill ``prompt_tokens`` (with a tokenizer) and drop prompts of at least ``limit`` tokens."""
    if tokenizer is None or not rows:
        return rows, {}
    counts = PromptBuilder(tokenizer=tokenizer).count_tokens([row["prompt"] for row in rows])
    kept: list[dict] = []
    for row, count in zip(rows, counts, strict=True):
        row["prompt_tokens"] = count
        if limit is None or count < limit:
            kept.append(row)
    return kept, ({} if limit is None else {"prompt_too_long": len(rows) - len(kept)})


def _validation_source(validation: tuple, split: bool) -> str:
    return {(False, False): "none", (False, True): "split", (True, False): "files", (True, True): "files+split"}[
        (bool(validation), split)
    ]


def _check_not_empty(
    train: list, val: list, val_source: str, sources: list[dict], train_rejects: dict, val_rejects: dict
) -> None:
    """An empty training set (or an empty validation set that was asked for) is an error naming why."""
    for role, rows, rejects in (("train", train, train_rejects), ("validation", val, val_rejects)):
        if rows or (role == "validation" and val_source == "none"):
            continue
        mine = [s for s in sources if s["role"] == role] or [s for s in sources if s["role"] == "train"]
        detail = "; ".join(
            f"{s['key']} ({s['data_path']}): {s['rows_in']} row(s), {s['duplicates']} duplicate(s)" for s in mine
        )
        too_long = rejects.get("prompt_too_long", 0)
        raise DataError(
            f"no {role} rows left after preparation: {detail}"
            + (f"; {too_long} prompt(s) rejected as too long (>= max_input_seq_length tokens)" if too_long else "")
            + f". Check the data_path{'s' if len(mine) > 1 else ''} and max_input_seq_length."
        )


def _source_record(
    spec: DatasetSpec, fmt: RowFormat, data: Dataset, *, duplicates: int, split_to_validation: int
) -> dict:
    return {
        **spec.summary(),
        "format": fmt.description,
        "sha256": sha256_of(spec.data_path),
        "lines": data.lines_read,
        "blank_lines": data.blank_lines,
        "rows_in": len(data.rows),
        "duplicates": duplicates,
        "split_to_validation": split_to_validation,
    }


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    """One canonical row per line, ``index`` = position in the file."""
    chunk = 4096  # one write per chunk of lines: a write call per line costs as much as encoding the line
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for start in range(0, len(rows), chunk):
            lines = []
            for index, row in enumerate(rows[start : start + chunk], start):
                row["index"] = index
                lines.append(encode_row(row))
            lines.append("")
            fh.write("\n".join(lines))
