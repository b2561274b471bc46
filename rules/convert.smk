# Checkpoint conversion: HF folder -> checkpoint_megatron (before rlvr, only when the policy given is not already
# a checkpoint_megatron) and checkpoint_megatron -> HF folder (the export after rlvr, or a step on its own).


def convert_dtype():
    return E.get("torch_dtype") or E.get("dtype") or "float32"


if STEP.id in ("rl/nemo_rl/rlvr", "convert/hf_to_megatron"):
    TO_MEGATRON_CFG = stage_config("hf_to_megatron", {
        "hf_model_id": hf_source(),
        "torch_dtype": convert_dtype() if STEP.id == "convert/hf_to_megatron" else "float32"})

    rule hf_to_megatron:
        input:
            local_inputs(hf_source()),
        output:
            directory(step_target() if STEP.id == "convert/hf_to_megatron"
                      else f"{RUN}/hf_to_megatron/checkpoint_megatron"),
        params:
            cfg=TO_MEGATRON_CFG.path,
            cfg_digest=TO_MEGATRON_CFG.digest,
        log:
            f"{RUN}/logs/hf_to_megatron.log",
        benchmark:
            f"{RUN}/benchmarks/hf_to_megatron.tsv"
        shell:
            "{PY} -m rlvr.stages hf_to_megatron --config {params.cfg:q} --megatron-path {output:q} > {log:q} 2>&1"


def export_source():
    if STEP.id == "convert/megatron_to_hf":
        return E["megatron_path"]
    return f"{RUN}/rlvr/checkpoint_megatron"


if STEP.id in ("rl/nemo_rl/rlvr", "convert/megatron_to_hf"):
    # The export's dtype: the step's own torch_dtype, or checkpointing.export_dtype after rlvr; unset = the input
    # model's dtype (recorded in the artifact), never silently policy.precision.
    TO_HF_CFG = stage_config("megatron_to_hf", {
        "torch_dtype": (E.get("torch_dtype") or E.get("dtype") or None) if STEP.id == "convert/megatron_to_hf"
                       else ((E.get("checkpointing") or {}).get("export_dtype") or None),
        "hf_model_id": E.get("hf_model_id") or None})

    rule megatron_to_hf:
        input:
            local_inputs(export_source()),
        output:
            directory(step_target() if STEP.id == "convert/megatron_to_hf" else f"{RUN}/megatron_to_hf/hf"),
        params:
            source=export_source(),
            cfg=TO_HF_CFG.path,
            cfg_digest=TO_HF_CFG.digest,
        log:
            f"{RUN}/logs/megatron_to_hf.log",
        benchmark:
            f"{RUN}/benchmarks/megatron_to_hf.tsv"
        shell:
            "{PY} -m rlvr.stages megatron_to_hf --config {params.cfg:q} --megatron-path {params.source:q}"
            " --hf-path {output:q} > {log:q} 2>&1"
