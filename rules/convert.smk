# Checkpoint conversion: HF folder -> checkpoint_megatron (before rlvr, only when the policy given is not already
# a checkpoint_megatron) and checkpoint_megatron -> HF folder (the export after rlvr, or a step on its own).


def convert_dtype():
    return E.get("torch_dtype") or E.get("dtype") or "float32"


if STEP.id in ("rl/nemo_rl/rlvr", "convert/hf_to_megatron"):

    rule hf_to_megatron:
        input:
            local_inputs(hf_source()),
        output:
            directory(step_target() if STEP.id == "convert/hf_to_megatron"
                      else f"{RUN}/hf_to_megatron/checkpoint_megatron"),
        params:
            source=hf_source(),
            dtype=convert_dtype() if STEP.id == "convert/hf_to_megatron" else "float32",
        log:
            f"{RUN}/logs/hf_to_megatron.log",
        benchmark:
            f"{RUN}/benchmarks/hf_to_megatron.tsv"
        shell:
            "{PY} -m rlvr.stages hf_to_megatron --hf-model-id {params.source:q} --megatron-path {output:q}"
            " --torch-dtype {params.dtype} > {log:q} 2>&1"


def export_source():
    if STEP.id == "convert/megatron_to_hf":
        return E["megatron_path"]
    return f"{RUN}/rlvr/checkpoint_megatron"


if STEP.id in ("rl/nemo_rl/rlvr", "convert/megatron_to_hf"):

    rule megatron_to_hf:
        input:
            local_inputs(export_source()),
        output:
            directory(step_target() if STEP.id == "convert/megatron_to_hf" else f"{RUN}/megatron_to_hf/hf"),
        params:
            source=export_source(),
            dtype=(E.get("torch_dtype") or E.get("dtype") or "") if STEP.id == "convert/megatron_to_hf"
                  else ((E.get("checkpointing") or {}).get("export_dtype") or ""),
            hf_model_id=E.get("hf_model_id") or "",
        log:
            f"{RUN}/logs/megatron_to_hf.log",
        benchmark:
            f"{RUN}/benchmarks/megatron_to_hf.tsv"
        shell:
            "{PY} -m rlvr.stages megatron_to_hf --megatron-path {params.source:q} --hf-path {output:q}"
            " --torch-dtype={params.dtype} --hf-model-id={params.hf_model_id:q} > {log:q} 2>&1"
