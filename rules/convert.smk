# Checkpoint conversion: HF folder -> checkpoint_megatron (before rlvr, only when the given policy is not
# already a checkpoint_megatron) and checkpoint_megatron -> HF folder (the export after rlvr, or a step on its own).
STAGE_SECTIONS["hf_to_megatron"] = lambda: sections.hf_to_megatron(
    RUN_CONFIG, source=config_value("hf_model_id") or policy_source()
)
STAGE_SECTIONS["megatron_to_hf"] = lambda: sections.megatron_to_hf(RUN_CONFIG)


rule hf_to_megatron:
    input:
        # convert/hf_to_megatron's hf_model_id, else the SFT policy; a hub id is no input (the stage fetches it).
        local_files(config_value("hf_model_id") or policy_source()),
    output:
        ckpt=directory(step_destination("hf_to_megatron", f"{RUN_DIR}/hf_to_megatron/checkpoint_megatron")),
    params:
        config=stage_config_file("hf_to_megatron"),
        digest=stage_digest("hf_to_megatron"),
    log:
        f"{RUN_DIR}/logs/hf_to_megatron.log",
    benchmark:
        f"{RUN_DIR}/benchmarks/hf_to_megatron.tsv"
    shell:
        "$PYTHON -m rlvr.stages hf_to_megatron --config {params.config:q} --megatron-path {output.ckpt:q}"
        " > {log:q} 2>&1"


rule megatron_to_hf:
    input:
        ckpt=lambda wildcards: export_source(),
    output:
        hf=directory(step_destination("megatron_to_hf", f"{RUN_DIR}/megatron_to_hf/hf")),
    params:
        config=stage_config_file("megatron_to_hf"),
        digest=stage_digest("megatron_to_hf"),
    log:
        f"{RUN_DIR}/logs/megatron_to_hf.log",
    benchmark:
        f"{RUN_DIR}/benchmarks/megatron_to_hf.tsv"
    shell:
        "$PYTHON -m rlvr.stages megatron_to_hf --config {params.config:q} --megatron-path {input.ckpt:q}"
        " --hf-path {output.hf:q} > {log:q} 2>&1"
