"""``python -m rlvr.stages <stage>``: the command each Snakemake rule runs.

Each stage takes its config section as JSON (the rule's params, so a config change re-runs exactly that rule)
and explicit input/output paths, then calls one engine function. User errors print one message, exit 2 and
leave no output behind (the engines write atomically).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from rlvr.errors import UserError


def _engine(module: str, name: str):
    """Import an engine function; a missing engine is a clear error, never a placeholder output."""
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise UserError(f"the engine {module}.{name} is not available in this installation") from None
        raise


def _tiny_data(args) -> None:
    cfg = _engine("rlvr.tiny.config", "TinyConfig").from_dict(_tiny_section(args.config_json))
    _engine("rlvr.tiny.arith", "write_tiny_datasets")(Path(args.out), cfg)


def _tiny_sft(args) -> None:
    cfg = _engine("rlvr.tiny.config", "TinyConfig").from_dict(_tiny_section(args.config_json))
    _engine("rlvr.tiny.sft", "train_sft_policy")(Path(args.data), Path(args.out), cfg)


def _tiny_section(config_json: str) -> dict:
    tiny = dict(json.loads(config_json).get("tiny") or {})
    tiny.pop("enabled", None)
    return tiny


def _rl_prep(args) -> None:
    cfg = json.loads(args.config_json)
    data = json.loads(json.dumps(cfg["data"]))
    for split, path in (("train", args.train), ("validation", args.validation)):
        if path and data.get(split) is not None:
            data[split]["data_path"] = path
        elif path and split == "validation":
            data["validation"] = {"data_path": path}
    tokenizer = _tokenizer_dir(args.tokenizer) if args.tokenizer else None
    seed = cfg.get("seed", (cfg.get("grpo") or {}).get("seed", 42))
    # policy.tokenizer.chat_template (rlvr) or chat_template (rl_prep), and the key that names it in messages.
    template = json.loads(args.template_json) if args.template_json else {}
    card = _engine("rlvr.data.prep", "prepare_rl_data")(
        data, out_dir=Path(args.out), tokenizer_dir=tokenizer, seed=seed,
        max_input_seq_length=data.get("max_input_seq_length"), chat_template=template.get("chat_template"),
        chat_template_kwargs=template.get("chat_template_kwargs"), template_key=template.get("key", "chat_template"))
    print(json.dumps(card, indent=2, sort_keys=True))
    overlap = card["overlap"]
    print(f"train/validation overlap: {overlap['validation_prompts_in_train']} of {overlap['validation_rows']} "
          "validation prompts are also training prompts")


def _tokenizer_dir(path: str) -> Path:
    """A tokenizer folder: given directly, or the one stored inside a checkpoint_megatron."""
    artifact = importlib.import_module("rlvr.convert.artifact")
    if artifact.is_checkpoint_megatron(Path(path)):
        return artifact.resolve_iteration_dir(Path(path)) / artifact.TOKENIZER_DIR
    return Path(path)


def _hf_to_megatron(args) -> None:
    _engine("rlvr.convert.hf_megatron", "hf_to_megatron")(args.hf_model_id, args.megatron_path, args.torch_dtype)


def _megatron_to_hf(args) -> None:
    _engine("rlvr.convert.hf_megatron", "megatron_to_hf")(args.megatron_path, args.hf_path,
                                                          args.torch_dtype or None)


def _rlvr(args) -> None:
    cfg = json.loads(args.config_json)
    _engine("rlvr.grpo.controller", "run_grpo")(cfg, data_dir=Path(args.data), policy_path=Path(args.policy),
                                                run_dir=Path(args.run_dir))


def _reward_preflight(args) -> None:
    from rlvr.utils.atomic import atomic_file

    rows_path = Path(args.data) / "val.jsonl"
    rows = [json.loads(line) for line in rows_path.read_text().splitlines() if line.strip()]
    env = json.loads(args.config_json).get("env") or {}
    if env.get("should_use_nemo_gym"):
        from rlvr.gym import GymRewardClient, local_options_from_env

        with GymRewardClient(env.get("nemo_gym") or {}, local_options=local_options_from_env(env)) as client:
            report = _engine("rlvr.rewards.preflight", "gym_preflight")(rows, client, source=str(rows_path))
    else:
        with _engine("rlvr.rewards.scorer", "scorer_from_env")(env) as scorer:
            report = _engine("rlvr.rewards.preflight", "preflight")(rows, scorer=scorer, source=str(rows_path))
    with atomic_file(args.out) as fh:
        json.dump({"rows": report.rows, "scored": report.scored, "ok": report.ok}, fh, indent=2)
    print(f"reward pre-flight passed: {report.rows} rows, {report.scored} checks")


def _report(args) -> None:
    _engine("rlvr.report", "write_report")(Path(args.run_dir), Path(args.out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rlvr.stages", description=__doc__)
    sub = parser.add_subparsers(dest="stage", required=True)

    p = sub.add_parser("tiny_data", help="write the tiny arithmetic datasets")
    p.add_argument("--config-json", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_tiny_data)

    p = sub.add_parser("tiny_sft", help="train the tiny SFT policy")
    p.add_argument("--config-json", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_tiny_sft)

    p = sub.add_parser("rl_prep", help="validate and template prompt JSONL")
    p.add_argument("--config-json", required=True)
    p.add_argument("--train", default="")
    p.add_argument("--validation", default="")
    p.add_argument("--tokenizer", default="")
    p.add_argument("--template-json", default="", help='{"chat_template", "chat_template_kwargs", "key"}')
    p.add_argument("--out", required=True)
    p.set_defaults(func=_rl_prep)

    p = sub.add_parser("hf_to_megatron", help="HF folder -> checkpoint_megatron")
    p.add_argument("--hf-model-id", required=True)
    p.add_argument("--megatron-path", required=True)
    p.add_argument("--torch-dtype", default="float32")
    p.set_defaults(func=_hf_to_megatron)

    p = sub.add_parser("megatron_to_hf", help="checkpoint_megatron -> HF folder")
    p.add_argument("--megatron-path", required=True)
    p.add_argument("--hf-path", required=True)
    p.add_argument("--torch-dtype", default="")
    p.add_argument("--hf-model-id", default="")
    p.set_defaults(func=_megatron_to_hf)

    p = sub.add_parser("rlvr", help="GRPO training")
    p.add_argument("--config-json", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--policy", required=True)
    p.add_argument("--run-dir", required=True)
    p.set_defaults(func=_rlvr)

    p = sub.add_parser("reward_preflight", help="check the verifiers on the validation rows")
    p.add_argument("--config-json", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_reward_preflight)

    p = sub.add_parser("report", help="curves and summary of a run")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
