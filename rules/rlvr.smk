# rl/nemo_rl/rlvr: GRPO training, and before it the reward pre-flight. Consumes the prepared prompts and the SFT
# checkpoint_megatron; produces the RLVR-aligned checkpoint_megatron, the summary and the metrics. The step
# checkpoints (for resume) live in rlvr/ckpts, which is not a declared output: Snakemake deletes the outputs of
# an interrupted job before it re-runs it, and the checkpoints must survive that (they also carry the lines of
# metrics.jsonl up to their step, so the resumed run's metrics are whole).
STAGE_SECTIONS["reward_preflight"] = lambda: sections.reward_preflight(RUN_CONFIG)
STAGE_SECTIONS["rlvr"] = lambda: sections.rlvr(RUN_CONFIG)


# Before any GPU hour: every validation row's own ground truth must score full reward and a corrupted answer 0
# (manifest error reward_function_not_validated); a disagreement stops the run with a report.
rule reward_preflight:
    input:
        prepared=rules.rl_prep.output.prepared,
    output:
        report=f"{RUN_DIR}/reward_preflight/report.json",
    params:
        config=stage_config_file("reward_preflight"),
        digest=stage_digest("reward_preflight"),
        rows=lambda wildcards, input: f"{input.prepared}/val.jsonl",
    log:
        f"{RUN_DIR}/logs/reward_preflight.log",
    shell:
        "$PYTHON -m rlvr.stages reward_preflight --config {params.config:q} --rows {params.rows:q}"
        " --out {output.report:q} > {log:q} 2>&1"


rule rlvr:
    input:
        prepared=rules.rl_prep.output.prepared,
        preflight=rules.reward_preflight.output.report,
        policy=sft_checkpoint(),
    output:
        ckpt=directory(f"{RUN_DIR}/rlvr/checkpoint_megatron"),
        summary=f"{RUN_DIR}/rlvr/summary.json",
        metrics=f"{RUN_DIR}/rlvr/metrics.jsonl",
        **lora_adapter_output(),
    params:
        config=stage_config_file("rlvr"),
        digest=stage_digest("rlvr"),
        base_model=policy_source(),
        lora_adapter=lambda wildcards, output: output.get("lora_adapter", ""),
        # rlvr's folder, which also holds what is not a rule output (step checkpoints, TensorBoard, rollout dumps).
        work_dir=lambda wildcards, output: os.path.dirname(output.summary),
        nodes=lambda wildcards: rlvr_placement().num_nodes,
        gpus_per_node=lambda wildcards: rlvr_placement().gpus_per_node,
    threads: ALL_CORES
    resources:
        gpus=lambda wildcards: rlvr_placement().total_gpus,
        nodes=lambda wildcards: rlvr_placement().num_nodes,
    log:
        f"{RUN_DIR}/logs/rlvr.log",
    benchmark:
        f"{RUN_DIR}/benchmarks/rlvr.tsv"
    # Multi-node runs start a Ray cluster over the Slurm allocation first (head + srun workers); a one-node run
    # outside Slurm just runs the stage (rlvr/launch/ray_slurm.py checks the topology either way).
    shell:
        "$PYTHON -m rlvr.launch.ray_slurm run --num-nodes {params.nodes} --gpus-per-node {params.gpus_per_node} --"
        " $PYTHON -m rlvr.stages rlvr --config {params.config:q} --data {input.prepared:q}"
        " --policy {input.policy:q} --base-model {params.base_model:q} --ckpt {output.ckpt:q}"
        " --summary {output.summary:q} --metrics {output.metrics:q} --lora-adapter {params.lora_adapter:q}"
        " --work-dir {params.work_dir:q} 2>&1 | tee {log:q}"
