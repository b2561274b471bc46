# data_prep/rl_prep: validate, normalise and template the prompt JSONL. In the rlvr DAG the prompts are
# templated with the SFT checkpoint's own tokenizer (chat template), so it runs after hf_to_megatron.


def rl_prep_tokenizer():
    """Tokenizer source: policy.tokenizer.name, else the SFT checkpoint (rlvr DAG), else the step's `tokenizer`."""
    if STEP.id == "rl/nemo_rl/rlvr":
        return (E["policy"].get("tokenizer") or {}).get("name") or sft_checkpoint()
    return E.get("tokenizer")


def rl_prep_template():
    """Chat template settings for rl_prep: policy.tokenizer.* (rlvr) or the step's top-level keys (rl_prep)."""
    if STEP.id == "rl/nemo_rl/rlvr":
        source, key = E["policy"].get("tokenizer") or {}, "policy.tokenizer.chat_template"
    else:
        source, key = E, "chat_template"
    return {"chat_template": source.get("chat_template"), "chat_template_kwargs": source.get("chat_template_kwargs"),
            "key": key}


def rl_prep_template_file():
    """The .jinja file named by the chat template setting: an input, so that editing it re-runs rl_prep and a
    missing file stops the plan before any compute (Snakemake's missing-input error names it)."""
    value = rl_prep_template()["chat_template"]
    return value if isinstance(value, str) and value.endswith((".jinja", ".j2")) else None


def rl_prep_sections():
    """What rl_prep reads: data (with the effective data paths), grpo, seed, the effective tokenizer and the chat
    template settings."""
    data = {**E["data"]}
    for split in ("train", "validation"):
        path = data_path(split)
        if path:
            data[split] = {**(data.get(split) or {}), "data_path": path}
    return {**sections("grpo", "seed"), "data": data, "tokenizer": rl_prep_tokenizer(),
            "template": rl_prep_template()}


if STEP.id in ("rl/nemo_rl/rlvr", "data_prep/rl_prep"):
    RL_PREP_CFG = stage_config("rl_prep", rl_prep_sections())

    rule rl_prep:
        input:
            data=local_inputs(data_path("train"), data_path("validation")),
            tokenizer=local_inputs(rl_prep_tokenizer()),
            template=[rl_prep_template_file()] if rl_prep_template_file() else [],
        output:
            directory(f"{RUN}/rl_prep"),
        params:
            cfg=RL_PREP_CFG.path,
            cfg_digest=RL_PREP_CFG.digest,
        log:
            f"{RUN}/logs/rl_prep.log",
        benchmark:
            f"{RUN}/benchmarks/rl_prep.tsv"
        shell:
            "{PY} -m rlvr.stages rl_prep --config {params.cfg:q} --out {output:q} > {log:q} 2>&1"
