"""``python -m rlvr.stages <stage>``: the command each Snakemake rule runs.

Each stage reads the config sections of its rule from a file (``--config <run>/stage_configs/<rule>.yaml``,
written by the workflow; secrets are ``${oc.env:...}`` references resolved here from the stage's environment, see
:mod:`rlvr.stages.stage_config`), so no config value is on the command line, and takes explicit input/output
paths, then calls one engine function. User errors print one message, exit 2 and leave no output behind (the
engines write atomically).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from rlvr.errors import UserError, describe_os_error
from rlvr.stages.stage_config import read_stage_config
from rlvr.utils.omp_wait import set_omp_wait


# Engines are imported inside each stage: a stage loads only what it runs (torch, megatron-core, transformers).
def _tiny_data(args) -> None:
    from rlvr.tiny.arith import write_tiny_datasets
    from rlvr.tiny.config import TinyConfig

    write_tiny_datasets(Path(args.out), TinyConfig.from_dict(read_stage_config(args.config)["tiny"]))


def _tiny_sft(args) -> None:
    from rlvr.tiny.config import TinyConfig
    from rlvr.tiny.sft import train_sft_policy

    train_sft_policy(Path(args.data), Path(args.out), TinyConfig.from_dict(read_stage_config(args.config)["tiny"]))


def _rl_prep(args) -> None:
    cfg = read_stage_config(args.config)  # rlvr.stages.sections.rl_prep: data, seed, tokenizer, template
    data = cfg["data"]
    tokenizer = _tokenizer_dir(cfg["tokenizer"]) if cfg["tokenizer"] else None
    # policy.tokenizer.chat_template (rlvr) or chat_template (rl_prep), and the key that names it in messages.
    template = cfg["template"]
    from rlvr.data.prep import prepare_rl_data

    card = prepare_rl_data(
        data,
        out_dir=Path(args.out),
        tokenizer_dir=tokenizer,
        seed=cfg["seed"],
        max_input_seq_length=data.get("max_input_seq_length"),
        chat_template=template["chat_template"],
        chat_template_kwargs=template["chat_template_kwargs"],
        template_key=template["key"],
    )
    print(json.dumps(card, indent=2, sort_keys=True))
    overlap = card["overlap"]
    print(
        f"train/validation overlap: {overlap['validation_prompts_in_train']} of {overlap['validation_rows']} "
        "validation prompts are also training prompts"
    )


def _tokenizer_dir(path: str) -> Path:
    """A tokenizer folder: given directly, or the one stored inside a checkpoint_megatron."""
    from rlvr.ckpt_layout import TOKENIZER_DIR, is_checkpoint_megatron, resolve_iteration_dir

    if is_checkpoint_megatron(Path(path)):
        return resolve_iteration_dir(Path(path)) / TOKENIZER_DIR
    return Path(path)


def _hf_to_megatron(args) -> None:
    from rlvr.convert.hf_megatron import hf_to_megatron

    cfg = read_stage_config(args.config)
    hf_to_megatron(cfg["hf_model_id"], args.megatron_path, cfg["torch_dtype"])


def _megatron_to_hf(args) -> None:
    from rlvr.convert.hf_megatron import megatron_to_hf

    cfg = read_stage_config(args.config)
    megatron_to_hf(args.megatron_path, args.hf_path, cfg.get("torch_dtype") or None)


def _rlvr(args) -> None:
    # Passive only: the stage's own reward workers compete for the cores even on a quiet machine.
    set_omp_wait(spin_when_idle=False)
    from rlvr.grpo.controller import RlvrPaths, run_grpo
    from rlvr.utils.runlock import RunLock

    paths = RlvrPaths(
        ckpt=Path(args.ckpt),
        summary=Path(args.summary),
        metrics=Path(args.metrics),
        work_dir=Path(args.work_dir),
        lora_adapter=Path(args.lora_adapter) if args.lora_adapter else None,
    )
    cfg = read_stage_config(args.config)
    # Its own lock, apart from the CLI's: two Snakemakes started by hand never train into one folder either.
    with RunLock(paths.work_dir, name=".stage.lock", what="the rlvr training stage") as lock:
        if note := lock.takeover_note():
            print(note, flush=True)
        run_grpo(
            cfg,
            data_dir=Path(args.data),
            policy_path=Path(args.policy),
            base_model=args.base_model,
            paths=paths,
            config_record=read_stage_config(args.config, resolve=False),
        )


def _reward_preflight(args) -> None:
    from rlvr.rewards.custom import reward_functions
    from rlvr.rewards.preflight import gym_preflight, preflight
    from rlvr.rewards.scorer import scorer_from_env
    from rlvr.utils.atomic import atomic_file

    rows_path = Path(args.rows)
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    env = read_stage_config(args.config).get("env") or {}
    if env.get("should_use_nemo_gym"):
        from rlvr.gym import GymRewardClient, local_options_from_env

        with GymRewardClient(env.get("nemo_gym") or {}, local_options=local_options_from_env(env)) as client:
            report = gym_preflight(rows, client, source=str(rows_path))
    else:
        functions = reward_functions(env)  # env.reward_functions, or the verifier alone
        with scorer_from_env(env) as scorer:
            report = preflight(rows, scorer=scorer, source=str(rows_path), functions=functions)
    with atomic_file(args.out) as fh:
        json.dump({"rows": report.rows, "scored": report.scored, "ok": report.ok}, fh, indent=2)
    print(f"reward pre-flight passed: {report.rows} rows, {report.scored} checks")


def _report(args) -> None:
    from rlvr.report import ReportInputs, write_report

    inputs = ReportInputs(
        metrics=Path(args.metrics),
        summary=Path(args.summary),
        data_card=Path(args.data_card),
        sft_policy=Path(args.sft_policy) if args.sft_policy else None,
        rollouts=Path(args.rollouts),
    )
    write_report(inputs, Path(args.out))


_CONFIG_HELP = "the rule's stage config file (<run>/stage_configs/<rule>.yaml)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rlvr.stages", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)

    p = sub.add_parser("tiny_data", help="write the tiny arithmetic datasets")
    p.add_argument("--config", required=True, help=_CONFIG_HELP)
    p.add_argument("--out", required=True, help="the folder of {sft,rl}_{train,val}.jsonl")
    p.set_defaults(func=_tiny_data)

    p = sub.add_parser("tiny_sft", help="train the tiny SFT policy")
    p.add_argument("--config", required=True, help=_CONFIG_HELP)
    p.add_argument("--data", required=True, help="the folder of tiny_data's files")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_tiny_sft)

    p = sub.add_parser("rl_prep", help="validate and template prompt JSONL")
    p.add_argument("--config", required=True, help=_CONFIG_HELP)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_rl_prep)

    p = sub.add_parser("hf_to_megatron", help="HF folder -> checkpoint_megatron")
    p.add_argument("--config", required=True, help=_CONFIG_HELP + ": hf_model_id, torch_dtype")
    p.add_argument("--megatron-path", required=True)
    p.set_defaults(func=_hf_to_megatron)

    p = sub.add_parser("megatron_to_hf", help="checkpoint_megatron -> HF folder")
    p.add_argument("--megatron-path", required=True)
    p.add_argument("--config", required=True, help=_CONFIG_HELP + ": torch_dtype, hf_model_id")
    p.add_argument("--hf-path", required=True)
    p.set_defaults(func=_megatron_to_hf)

    p = sub.add_parser("rlvr", help="GRPO training")
    p.add_argument("--config", required=True, help=_CONFIG_HELP)
    p.add_argument("--data", required=True, help="rl_prep's folder")
    p.add_argument("--policy", required=True, help="the SFT checkpoint_megatron")
    p.add_argument("--base-model", required=True, help="the HF policy it came from (what a LoRA adapter applies to)")
    p.add_argument("--ckpt", required=True, help="the RLVR-aligned checkpoint_megatron to write")
    p.add_argument("--summary", required=True)
    p.add_argument("--metrics", required=True, help="metrics.jsonl, one line per step")
    p.add_argument("--lora-adapter", nargs="?", help="the PEFT adapter folder of a LoRA run (empty: not LoRA)")
    p.add_argument("--work-dir", required=True, help="step checkpoints (resume), config record, TensorBoard files")
    p.set_defaults(func=_rlvr)

    p = sub.add_parser("reward_preflight", help="check the verifiers on the validation rows")
    p.add_argument("--config", required=True, help=_CONFIG_HELP)
    p.add_argument("--rows", required=True, help="the prepared validation JSONL")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_reward_preflight)

    p = sub.add_parser("report", help="curves, tables and summary of a run")
    p.add_argument("--metrics", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("--data-card", required=True)
    p.add_argument("--sft-policy", nargs="?", help="the tiny SFT policy folder (empty: the run made none)")
    p.add_argument("--rollouts", required=True, help="rlvr's rollout dumps folder (absent when dumps are off)")
    p.add_argument("--out", required=True, help="the report folder")
    p.set_defaults(func=_report)
    return parser


def _interrupt(signum, _frame):
    raise KeyboardInterrupt  # SIGTERM ends a stage like Ctrl-C: cleanup handlers run, workers are shut down


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: the {args.stage} stage could not write its output: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"interrupted: the {args.stage} stage stopped; its outputs were not written (a step checkpoint "
            "already on disk is complete and is resumed from)",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
