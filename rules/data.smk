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


if STEP.id in ("rl/nemo_rl/rlvr", "data_prep/rl_prep"):

    rule rl_prep:
        input:
            data=local_inputs(data_path("train"), data_path("validation")),
            tokenizer=local_inputs(rl_prep_tokenizer()),
            template=[rl_prep_template_file()] if rl_prep_template_file() else [],
        output:
            directory(f"{RUN}/rl_prep"),
        params:
            cfg=lambda wildcards: section_json("data", "grpo", "seed"),
            tokenizer=rl_prep_tokenizer() or "",
            template=json.dumps(rl_prep_template(), sort_keys=True, separators=(",", ":")),
            train=data_path("train") or "",
            validation=data_path("validation") or "",
        log:
            f"{RUN}/logs/rl_prep.log",
        benchmark:
            f"{RUN}/benchmarks/rl_prep.tsv"
        shell:
            "{PY} -m rlvr.stages rl_prep --config-json {params.cfg:q} --train {params.train:q}"
            " --validation {params.validation:q} --tokenizer {params.tokenizer:q} --template-json {params.template:q}"
            " --out {output:q} > {log:q} 2>&1"
