# The run report: curves, the validation table, sample rollouts and the data card, as files of one folder and as
# the results of `snakemake --report` (each output flagged report() with a caption from report/).
rule report:
    input:
        metrics=rules.rlvr.output.metrics,
        summary=rules.rlvr.output.summary,
        prepared=rules.rl_prep.output.prepared,
        # The SFT policy made by the tiny bootstrap (its sft_metrics.json), when this run made one.
        sft_policy=sft_policy_made_here(),
        # The export is part of the finished run: the report comes last.
        export=rules.megatron_to_hf.output.hf,
    output:
        markdown=f"{RUN_DIR}/report/report.md",
        curves=report(
            f"{RUN_DIR}/report/curves.png",
            caption="../report/curves.rst",
            category="Training",
            labels={"figure": "reward and validation accuracy"},
        ),
        validation=report(
            f"{RUN_DIR}/report/validation.html",
            caption="../report/validation.rst",
            category="Training",
            labels={"table": "validation metrics"},
        ),
        rollouts=report(
            f"{RUN_DIR}/report/rollouts.html",
            caption="../report/rollouts.rst",
            category="Training",
            labels={"table": "sample rollouts"},
        ),
        data_card=report(
            f"{RUN_DIR}/report/data_card.html",
            caption="../report/data_card.rst",
            category="Data",
            labels={"table": "data card"},
        ),
    params:
        data_card=lambda wildcards, input: f"{input.prepared}/data_card.json",
        # rlvr's per-step rollout dumps (logger settings), read when present. Not an input: like the step
        # checkpoints, the dumps are no declared output of rlvr, since Snakemake would delete an interrupted
        # job's dumps before it resumes.
        rollouts=f"{RUN_DIR}/rlvr/rollouts",
        folder=lambda wildcards, output: os.path.dirname(output.markdown),
    log:
        f"{RUN_DIR}/logs/report.log",
    shell:
        "$PYTHON -m rlvr.stages report --metrics {input.metrics:q} --summary {input.summary:q}"
        " --data-card {params.data_card:q} --sft-policy {input.sft_policy:q} --rollouts {params.rollouts:q}"
        " --out {params.folder:q} > {log:q} 2>&1"
