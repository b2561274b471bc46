# rl/nemo_rl/rlvr: GRPO training. Consumes the prepared prompts and the SFT checkpoint_megatron; produces the
# RLVR-aligned checkpoint_megatron. Step checkpoints (for resume) live in rlvr/ckpts, which is not a declared
# output, so Snakemake never deletes them when it re-runs an interrupted job.
if STEP.id == "rl/nemo_rl/rlvr":
    PREFLIGHT_CFG = stage_config("reward_preflight", sections("env"))
    RLVR_CFG = stage_config("rlvr", E)
    # The job's shape (Slurm and Lepton read nodes/gpus) comes from the placement plan the trainer follows.
    PLAN = plan_placement(E)

    # Before any GPU hour: every validation row's own ground truth must score full reward and a corrupted
    # answer 0 (manifest error reward_function_not_validated); a disagreement stops the run with a report.
    rule reward_preflight:
        input:
            data=f"{RUN}/rl_prep",
        output:
            f"{RUN}/reward_preflight/report.json",
        params:
            cfg=PREFLIGHT_CFG.path,
            cfg_digest=PREFLIGHT_CFG.digest,
        log:
            f"{RUN}/logs/reward_preflight.log",
        shell:
            "{PY} -m rlvr.stages reward_preflight --config {params.cfg:q} --data {input.data:q}"
            " --out {output:q} > {log:q} 2>&1"

    rule rlvr:
        input:
            data=f"{RUN}/rl_prep",
            preflight=rules.reward_preflight.output[0],
            policy=sft_checkpoint(),
        output:
            ckpt=directory(f"{RUN}/rlvr/checkpoint_megatron"),
            summary=f"{RUN}/rlvr/summary.json",
            # A LoRA run (policy.dtensor_cfg.lora_cfg.enabled) also writes its PEFT adapter folder.
            **({"lora_adapter": directory(f"{RUN}/rlvr/lora_adapter")} if lora_enabled() else {}),
        params:
            cfg=RLVR_CFG.path,
            cfg_digest=RLVR_CFG.digest,
            run_dir=RUN,
            nodes=PLAN.num_nodes,
            gpus_per_node=PLAN.gpus_per_node,
        threads: workflow.cores
        resources:
            gpus=PLAN.total_gpus,
            nodes=PLAN.num_nodes,
        log:
            f"{RUN}/logs/rlvr.log",
        benchmark:
            f"{RUN}/benchmarks/rlvr.tsv"
        # Multi-node runs start a Ray cluster over the Slurm allocation first (head + srun workers); a one-node
        # run outside Slurm just runs the stage (rlvr/launch/ray_slurm.py checks the topology either way).
        shell:
            "{PY} -m rlvr.launch.ray_slurm run --num-nodes {params.nodes} --gpus-per-node {params.gpus_per_node} --"
            " {PY} -m rlvr.stages rlvr --config {params.cfg:q} --data {input.data:q} --policy {input.policy:q}"
            " --run-dir {params.run_dir:q} 2>&1 | tee {log:q}"
