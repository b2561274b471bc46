# The tiny bootstrap (rl/nemo_rl/rlvr -c tiny): arithmetic data and a small SFT policy made on the CPU, so the
# whole pipeline runs without downloads. The rules always exist; they join the DAG only when an input function
# of rules/common.smk (policy_source, data_path) asks for their outputs, which tiny_bootstrap() decides.
STAGE_SECTIONS["tiny_data"] = lambda: sections.tiny_data(RUN_CONFIG)
STAGE_SECTIONS["tiny_sft"] = lambda: sections.tiny_sft(RUN_CONFIG)


rule tiny_data:
    output:
        rl_train=f"{RUN_DIR}/tiny_data/rl_train.jsonl",
        rl_val=f"{RUN_DIR}/tiny_data/rl_val.jsonl",
        sft_train=f"{RUN_DIR}/tiny_data/sft_train.jsonl",
        sft_val=f"{RUN_DIR}/tiny_data/sft_val.jsonl",
    params:
        config=stage_config_file("tiny_data"),
        digest=stage_digest("tiny_data"),
        # The stage writes the four files above, by these names, into their folder.
        folder=lambda wildcards, output: os.path.dirname(output.rl_train),
    log:
        f"{RUN_DIR}/logs/tiny_data.log",
    benchmark:
        f"{RUN_DIR}/benchmarks/tiny_data.tsv"
    shell:
        "$PYTHON -m rlvr.stages tiny_data --config {params.config:q} --out {params.folder:q} > {log:q} 2>&1"


rule tiny_sft:
    input:
        sft_train=rules.tiny_data.output.sft_train,
        sft_val=rules.tiny_data.output.sft_val,
        rl_val=rules.tiny_data.output.rl_val,
    output:
        policy=directory(f"{RUN_DIR}/tiny_sft/policy"),
    params:
        config=stage_config_file("tiny_sft"),
        digest=stage_digest("tiny_sft"),
        # The stage reads the three inputs above, by these names, from their folder.
        data=lambda wildcards, input: os.path.dirname(input.sft_train),
    threads: ALL_CORES
    log:
        f"{RUN_DIR}/logs/tiny_sft.log",
    benchmark:
        f"{RUN_DIR}/benchmarks/tiny_sft.tsv"
    shell:
        "$PYTHON -m rlvr.stages tiny_sft --config {params.config:q} --data {params.data:q} --out {output.policy:q}"
        " > {log:q} 2>&1"
