# data_prep/rl_prep: validate, normalise and template the prompt JSONL. In the rlvr DAG the prompts are
# templated with the SFT checkpoint's own tokenizer (chat template), so it runs after hf_to_megatron.
STAGE_SECTIONS["rl_prep"] = lambda: sections.rl_prep(
    RUN_CONFIG,
    data_paths={split: data_path(split) for split in ("train", "validation")},
    tokenizer=rl_prep_tokenizer(),
)


rule rl_prep:
    input:
        data=local_files(data_path("train"), data_path("validation")),
        tokenizer=local_files(rl_prep_tokenizer()),
        template=chat_template_file(),
    # One folder, written atomically: train.jsonl, val.jsonl, data_card.json and, when the prompts were made with
    # a chat template other than the tokenizer's own, tokenizer/ (rlvr then trains with it).
    output:
        prepared=directory(f"{RUN_DIR}/rl_prep"),
    params:
        config=stage_config_file("rl_prep"),
        digest=stage_digest("rl_prep"),
    log:
        f"{RUN_DIR}/logs/rl_prep.log",
    benchmark:
        f"{RUN_DIR}/benchmarks/rl_prep.tsv"
    shell:
        "$PYTHON -m rlvr.stages rl_prep --config {params.config:q} --out {output.prepared:q} > {log:q} 2>&1"
