# data_prep/rl_prep: validate, normalise and template the prompt JSONL. In the rlvr DAG the prompts are
# templated with the SFT checkpoint's own tokenizer (chat template), so it runs after hf_to_megatron.


def rl_prep_tokenizer():
    """Tokenizer source: policy.tokenizer.name, else the SFT checkpoint (rlvr DAG), else the step's `tokenizer`."""
    if STEP.id == "rl/nemo_rl/rlvr":
        return (E["policy"].get("tokenizer") or {}).get("name") or sft_checkpoint()
    return E.get("tokenizer")


if STEP.id in ("rl/nemo_rl/rlvr", "data_prep/rl_prep"):

    rule rl_prep:
        input:
            data=local_inputs(data_path("train"), data_path("validation")),
            tokenizer=local_inputs(rl_prep_tokenizer()),
        output:
            directory(f"{RUN}/rl_prep"),
        params:
            cfg=lambda wildcards: section_json("data", "grpo", "seed"),
            tokenizer=rl_prep_tokenizer() or "",
            train=data_path("train") or "",
            validation=data_path("validation") or "",
        log:
            f"{RUN}/logs/rl_prep.log",
        benchmark:
            f"{RUN}/benchmarks/rl_prep.tsv"
        shell:
            "{PY} -m rlvr.stages rl_prep --config-json {params.cfg:q} --train {params.train:q}"
            " --validation {params.validation:q} --tokenizer {params.tokenizer:q} --out {output:q} > {log:q} 2>&1"
