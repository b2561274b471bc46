# The run report: reward and accuracy curves (PNG), the data card and the final metrics, in one folder.
if STEP.id == "rl/nemo_rl/rlvr":

    rule report:
        input:
            summary=rules.rlvr.output.summary,
            data=rules.rl_prep.output[0],
            export=rules.megatron_to_hf.output[0],
        output:
            f"{RUN}/report/report.md",
        log:
            f"{RUN}/logs/report.log",
        shell:
            "{PY} -m rlvr.stages report --run-dir {RUN:q} --out {RUN}/report > {log:q} 2>&1"
