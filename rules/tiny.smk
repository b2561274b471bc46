# The tiny bootstrap (rl/nemo_rl/rlvr -c tiny): arithmetic data and a small SFT policy made on the CPU, so the
# whole pipeline runs without downloads. These rules exist only when tiny.enabled is true.
if tiny_enabled():
    TINY_DATA_CFG = stage_config("tiny_data", {"tiny": {k: v for k, v in E["tiny"].items() if k in ("seed", "data")}})
    TINY_SFT_CFG = stage_config("tiny_sft", sections("tiny"))

    rule tiny_data:
        output:
            rl_train=f"{RUN}/tiny_data/rl_train.jsonl",
            rl_val=f"{RUN}/tiny_data/rl_val.jsonl",
            sft_train=f"{RUN}/tiny_data/sft_train.jsonl",
            sft_val=f"{RUN}/tiny_data/sft_val.jsonl",
        params:
            cfg=TINY_DATA_CFG.path,
            cfg_digest=TINY_DATA_CFG.digest,
        log:
            f"{RUN}/logs/tiny_data.log",
        benchmark:
            f"{RUN}/benchmarks/tiny_data.tsv"
        shell:
            "{PY} -m rlvr.stages tiny_data --config {params.cfg:q} --out {RUN}/tiny_data > {log:q} 2>&1"

    rule tiny_sft:
        input:
            sft_train=rules.tiny_data.output.sft_train,
            sft_val=rules.tiny_data.output.sft_val,
            rl_val=rules.tiny_data.output.rl_val,
        output:
            directory(f"{RUN}/tiny_sft/policy"),
        params:
            cfg=TINY_SFT_CFG.path,
            cfg_digest=TINY_SFT_CFG.digest,
        threads: workflow.cores
        log:
            f"{RUN}/logs/tiny_sft.log",
        benchmark:
            f"{RUN}/benchmarks/tiny_sft.tsv"
        shell:
            "{PY} -m rlvr.stages tiny_sft --config {params.cfg:q} --data {RUN}/tiny_data --out {output:q}"
            " > {log:q} 2>&1"
