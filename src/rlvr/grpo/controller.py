"""The GRPO controller: orchestration only (the math is in advantages.py, loss.py and shaping.py).

One step, in NeMo-RL's order (spec §1.2): take ``num_prompts_per_step`` prompts → repeat each
``num_generations_per_prompt`` times → generate → score → reward scaling → reward shaping → (dynamic sampling:
keep rows with reward spread, generate more if short) → overlong filtering and prompt-length masks →
previous-policy log-probs (skipped with ``force_on_policy_ratio`` unless the error mask or
``loss_fn.use_kl_in_reward`` reads them) and reference log-probs (only when the KL weight is > 0) → sequence
log-prob error mask → advantages over the tokens that train (+ clip) → ``rollout / train_global_batch_size``
optimizer steps and one LR-scheduler step → validation → metrics → checkpoint.

Algorithm switches and what each changes:

* ``grpo.normalize_rewards`` / ``use_leave_one_out_baseline`` (and ``adv_estimator.*``, which must agree):
  advantage baseline and scale; ``advantage_clip_low/high``: clamp after normalisation.
* ``grpo.reward_scaling.*``, ``grpo.reward_shaping.*``: rewards before advantages.
* ``grpo.use_dynamic_sampling``: drop zero-spread rows, regenerate up to ``dynamic_sampling_max_gen_batches``.
* ``grpo.overlong_filtering``: truncated samples get no loss (they still shape the baseline).
* ``env.should_mask_flagged_samples``: NeMo-Gym samples flagged ``mask_sample`` get no loss (counted as
  ``train/flagged_samples`` either way; they still shape the baseline).
* ``grpo.seq_logprob_error_threshold``: mask sequences whose sampler/trainer log-probs disagree.
* ``loss_fn.*``: the objective (see loss.py); ``reference_policy_kl_penalty > 0`` builds a frozen reference.
* ``grpo.val_*``: when and how validation runs; ``checkpointing.*``: saving, retention, resume.
* ``logger.tensorboard_enabled``, ``logger.mlflow_enabled`` / ``wandb_enabled`` (+ ``logger.mlflow.*``,
  ``logger.wandb.*``): where metrics go besides metrics.jsonl; ``logger.monitor_gpus``: per-step CUDA
  memory/utilisation metrics (nothing on CPU); see tracking.py. ``logger.rollout_dumps``: per-step JSONL of
  generated samples (rollout_dump.py).
* ``env.reward_functions``: the reward as a weighted sum of the verifier, built-in and custom functions
  (rewards/custom.py), each logged as ``train/reward/<name>`` and ``validation/reward/<name>``.
* ``grpo.zero_signal_patience`` / ``stop_on_zero_signal``: ``train/frac_groups_zero_std`` at 1.0 (no group has
  any reward spread, so nothing is learned) for that many steps in a row prints a loud warning, or stops the run
  with ``no_learning_signal`` (signal_guard.py); the report repeats it.

Upstream bugs not reproduced here (each with a comment where it matters): roundoff in LOO "all equal" groups
(advantages.py), the validation-size crash (config checks), and forced auto-resume of unrelated runs
(step_ckpts.py: resume needs the same run fingerprint).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rlvr.config.secrets import config_yaml
from rlvr.data.chat_template import with_prepared_tokenizer
from rlvr.errors import UserError
from rlvr.generation.base import GenerationConfig
from rlvr.grpo.advantages import build_advantage_estimator
from rlvr.grpo.collect import RolloutCollection
from rlvr.grpo.loss import ClippedPGLoss
from rlvr.grpo.metrics_log import MetricsLog, read_metrics
from rlvr.grpo.roles import PolicyWorkers, RewardWorker, load_rows
from rlvr.grpo.rollout import Rollout, loss_sample_mask, reward_component_metrics, rollout_metrics, to_train_tensors
from rlvr.grpo.rollout_dump import RolloutDumps, table_columns
from rlvr.grpo.saving import STEP_HISTORY, STEP_METRICS, RunSaving, read_json
from rlvr.grpo.shaping import DynamicSampler, mask_by_seq_logprob_error
from rlvr.grpo.signal_guard import METRIC as ZERO_STD_METRIC
from rlvr.grpo.signal_guard import ZeroSignalGuard, frac_groups_zero_std
from rlvr.grpo.step_ckpts import StepCheckpoints, file_digest, run_fingerprint, tree_digest
from rlvr.grpo.validation import Validation
from rlvr.tracking import gpu_metrics, trackers
from rlvr.utils.atomic import atomic_file


@dataclass(frozen=True)
class RlvrPaths:
    """Where the rlvr stage writes. The rule declares ``ckpt``, ``summary``, ``metrics`` (and ``lora_adapter`` for a
    LoRA run, ``policy.dtensor_cfg.lora_cfg``) as its outputs and passes them; ``work_dir`` holds what is not a rule
    output: the step checkpoints (Snakemake would delete an output of an interrupted job, and resume needs them), the
    config record, TensorBoard and MLflow files."""

    ckpt: Path
    summary: Path
    metrics: Path
    work_dir: Path
    lora_adapter: Path | None = None


class GRPOController(RolloutCollection, Validation, RunSaving):
    """Runs the GRPO loop of one run folder; resumable (see step_ckpts.py).

    Its parts live beside it: the rollouts (collect.py), validation (validation.py), the checkpoint and final
    outputs (saving.py); the step's training half and the loop are here.
    """

    def __init__(
        self,
        cfg: dict[str, Any],
        *,
        data_dir: Path,
        policy_path: Path,
        base_model: str,
        paths: RlvrPaths,
        config_record: dict[str, Any] | None = None,
        workers: PolicyWorkers | None = None,
        rewards: RewardWorker | None = None,
    ):
        """``workers`` / ``rewards``: roles built by the caller (tests pass a fake policy, generator and verifier);
        None builds them from ``cfg``."""
        self.cfg = cfg
        self.config_record = config_record or cfg  # secrets as ${oc.env:...} references when given
        self.grpo, self.policy_cfg, self.loss_cfg = cfg["grpo"], cfg["policy"], cfg["loss_fn"]
        self.paths, self.out = paths, paths.work_dir
        self.out.mkdir(parents=True, exist_ok=True)
        self.train_rows = load_rows(Path(data_dir) / "train.jsonl")
        self.val_rows = load_rows(Path(data_dir) / "val.jsonl")
        torch.manual_seed(self.grpo["seed"])
        # rl_prep's tokenizer/ (when it wrote one) carries the chat template the prompts were made with.
        if workers is None:
            workers = PolicyWorkers.build(with_prepared_tokenizer(cfg, data_dir), Path(policy_path))
        self.workers = workers
        from rlvr.convert.artifact import read_run_config
        from rlvr.convert.hf_megatron import export_dtype

        self.source_dtype = export_dtype(read_run_config(policy_path))  # the export's dtype, not the training's
        self.base_model = base_model  # what a LoRA adapter applies to: the HF policy the SFT checkpoint came from
        self.rewards = RewardWorker(cfg) if rewards is None else rewards
        self.train_prompt_ids = self.workers.encode([r["prompt"] for r in self.train_rows])
        self.val_prompt_ids = self.workers.encode([r["prompt"] for r in self.val_rows])
        self.loss_fn = ClippedPGLoss(self.loss_cfg)
        adv_cfg = {k: v for k, v in self.grpo["adv_estimator"].items() if v is not None}
        adv_cfg.setdefault("normalize_rewards", self.grpo["normalize_rewards"])
        adv_cfg.setdefault("use_leave_one_out_baseline", self.grpo["use_leave_one_out_baseline"])
        self.estimator = build_advantage_estimator(adv_cfg, self.loss_cfg)
        self.loo = adv_cfg["use_leave_one_out_baseline"]
        self.gen_cfg = GenerationConfig.from_config(self.policy_cfg["generation"])
        self.val_gen_cfg = GenerationConfig.from_config(self.policy_cfg["generation"], validation=True)
        ckpt_cfg = cfg["checkpointing"]
        # Fingerprinted with secrets as references: a rotated token still resumes, and no hash of a secret is kept.
        fingerprint = run_fingerprint(
            self.config_record,
            {
                "train": file_digest(Path(data_dir) / "train.jsonl"),
                "val": file_digest(Path(data_dir) / "val.jsonl"),
                "policy": tree_digest(Path(policy_path)),
            },
        )
        self.ckpts = StepCheckpoints(
            Path(ckpt_cfg["checkpoint_dir"] or self.out / "ckpts"),  # null (the default): the run's own folder
            fingerprint=fingerprint,
            metric_name=ckpt_cfg["metric_name"],
            higher_is_better=ckpt_cfg["higher_is_better"],
            keep_top_k=ckpt_cfg["keep_top_k"],
            save_period=ckpt_cfg["save_period"],
            save_optimizer=ckpt_cfg["save_optimizer"],
            model_save_format=ckpt_cfg["model_save_format"],
        )
        self.ckpt_enabled = ckpt_cfg["enabled"]
        logger = cfg["logger"]
        tb = logger["tensorboard"]["log_dir"] or self.out / "tensorboard"  # null (the default): in the run folder
        self.trackers = trackers(logger, out_dir=self.out, run_name=self.out.parent.name)  # the run folder's name
        self.dumps = RolloutDumps(
            self.out, mode=logger["rollout_dumps"], rows=logger["rollout_dump_rows"], seed=self.grpo["seed"]
        )
        self.log_reward_functions = bool(cfg["env"]["reward_functions"])  # reward/<name> metrics
        self.monitor_gpus = bool(logger["monitor_gpus"])
        self.metrics = MetricsLog(
            paths.metrics,
            total_steps=self.grpo["max_num_steps"],
            tensorboard_dir=Path(tb) if logger["tensorboard_enabled"] else None,
            progress_bar=logger["progress_bar"],
            sinks=self.trackers,
            progress_every_n_steps=logger["progress_every_n_steps"],
            progress_every_s=logger["progress_every_s"],
        )
        self.signal_guard = ZeroSignalGuard.from_config(self.grpo)
        # Every prompt drawn, extra dynamic-sampling batches included: the data position a resume continues from
        # (upstream's consumed_samples metric adds only num_prompts_per_step per step).
        self.consumed_prompts = 0
        self.sampler = DynamicSampler(
            self.grpo["num_prompts_per_step"] * self.grpo["num_generations_per_prompt"],
            self.grpo["dynamic_sampling_max_gen_batches"],
        )

    # ------------------------------------------------------------------------------------ training
    def _train_batch(self, rollout: Rollout) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
        batch = to_train_tensors(
            rollout.prompt_ids,
            rollout.outputs,
            pad_id=self.workers.pad_id,
            multiple_of=self.policy_cfg["make_sequence_length_divisible_by"],
        )
        batch["sample_mask"], metrics = loss_sample_mask(
            rollout,
            overlong_filtering=bool(self.grpo["overlong_filtering"]),
            max_input_seq_length=self.cfg["data"]["max_input_seq_length"],
            mask_flagged=bool(self.cfg["env"]["should_mask_flagged_samples"]),
        )
        timer = time.perf_counter()
        # force_on_policy_ratio needs no prev pass for the loss, but the error mask and a KL in the reward read it.
        needs_prev = (
            not self.loss_cfg["force_on_policy_ratio"]
            or self.grpo["seq_logprob_error_threshold"] is not None
            or self.loss_cfg["use_kl_in_reward"]
        )
        batch["prev_logprobs"] = (
            self.workers.logprobs(batch) if needs_prev else torch.zeros_like(batch["generation_logprobs"])
        )
        batch["reference_policy_logprobs"] = (
            self.workers.reference_logprobs(batch)
            if self.workers.has_reference
            else torch.zeros_like(batch["generation_logprobs"])
        )
        metrics["timing/train/policy_and_reference_logprobs"] = time.perf_counter() - timer
        if self.grpo["seq_logprob_error_threshold"] is not None:
            batch["sample_mask"], err_metrics = mask_by_seq_logprob_error(
                batch["generation_logprobs"],
                batch["prev_logprobs"],
                batch["token_mask"],
                batch["sample_mask"],
                threshold=self.grpo["seq_logprob_error_threshold"],
                rewards=rollout.rewards,
            )
            metrics.update({f"train/{k}": v for k, v in err_metrics.items()})
        timer = time.perf_counter()
        adv = self.estimator(
            rollout.rewards,
            rollout.group_ids,
            batch["token_mask"] * batch["sample_mask"].unsqueeze(-1),  # the tokens that train (whitening set)
            prev_logprobs=batch["prev_logprobs"],
            reference_logprobs=batch["reference_policy_logprobs"],
        )
        lo, hi = self.grpo["advantage_clip_low"], self.grpo["advantage_clip_high"]
        if lo is not None or hi is not None:
            adv = adv.clamp(min=lo, max=hi)
        batch["advantages"] = adv
        batch["rewards"] = rollout.rewards.to(torch.float32)  # [B]; loss_fn.positive_example_nll_weight reads them
        metrics["timing/train/advantage_calculation"] = time.perf_counter() - timer
        valid = batch["token_mask"].bool() & batch["sample_mask"].bool().unsqueeze(-1)
        if valid.any():
            metrics.update(
                {
                    "train/advantages/mean": float(adv[valid].mean()),
                    "train/advantages/max": float(adv[valid].max()),
                    "train/advantages/min": float(adv[valid].min()),
                }
            )
        return batch, metrics

    def train_step(self, step: int) -> dict[str, float] | None:
        start, cpu_start = time.perf_counter(), time.process_time()
        timer = time.perf_counter()
        collected = self._collect(step)
        if collected is None:
            return None
        rollout, metrics = collected
        metrics["timing/train/generation_and_reward"] = time.perf_counter() - timer
        metrics["timing/train/reward_calculation"] = self.rewards.last_time
        metrics["timing/train/generation"] = metrics["timing/train/generation_and_reward"] - self.rewards.last_time
        batch, batch_metrics = self._train_batch(rollout)
        metrics.update(batch_metrics)
        records = self.dumps.write(step, rollout, batch["advantages"], batch["token_mask"], batch["sample_mask"])
        self.metrics.log_samples(step, *table_columns(records))
        timer = time.perf_counter()
        train_metrics = self.workers.train(
            batch, self.loss_fn, self.policy_cfg["train_global_batch_size"], self.policy_cfg["train_micro_batch_size"]
        )
        metrics["timing/train/policy_training"] = time.perf_counter() - timer
        metrics.update({f"train/{k}": v for k, v in train_metrics.items()})
        metrics.update(rollout_metrics(rollout))
        metrics.update({f"train/{k}": v for k, v in rollout.reward_errors.items()})
        metrics["train/reward"] = float(rollout.rewards.mean())
        metrics["train/raw_reward"] = float(rollout.raw_rewards.mean())
        if self.log_reward_functions:
            metrics.update(reward_component_metrics(rollout.reward_components, "train/"))
        metrics[ZERO_STD_METRIC] = frac_groups_zero_std(rollout.rewards, rollout.group_ids)
        if self.monitor_gpus:
            metrics.update(gpu_metrics())  # {} without CUDA
        tokens = float(batch["attention_mask"].sum())
        metrics["timing/train/total_step_time"] = time.perf_counter() - start
        # CPU seconds of this process (reward workers excluded): on a shared machine steadier than wall time.
        metrics["timing/train/total_step_cpu_time"] = time.process_time() - cpu_start
        metrics["performance/tokens_per_sec"] = tokens / metrics["timing/train/total_step_time"]
        metrics["performance/generation_tokens_per_sec"] = float(batch["token_mask"].sum()) / max(
            metrics["timing/train/generation"], 1e-9
        )
        return metrics

    # ------------------------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        wall = time.perf_counter()
        # A superseded run's metrics move aside with its checkpoints: nothing of it is lost.
        point = self.ckpts.find_resume_point(companions=(self.metrics.path,)) if self.ckpt_enabled else None
        step = 0
        if point is not None and point.step > self.grpo["max_num_steps"]:
            raise UserError(
                f"{point.path} is step {point.step}, past grpo.max_num_steps={self.grpo['max_num_steps']}: "
                f"this run already trained further, and exporting it would not be what was asked. Set "
                f"grpo.max_num_steps={point.step} (or more) to continue it, or point "
                f"checkpointing.checkpoint_dir elsewhere to train a shorter run afresh"
            )
        if point is not None:
            model_state, optimizer_state = StepCheckpoints.load(point)
            self.workers.load_state(model_state, optimizer_state)
            step, self.consumed_prompts = point.step, point.info["consumed_prompts"]
        saved_line = read_json(point.path / STEP_METRICS) if point is not None else None
        history = read_json(point.path / STEP_HISTORY) if point is not None else None
        if history is not None and not self.metrics.path.exists():
            # Snakemake deletes a re-run job's outputs, metrics.jsonl too: the lines before the checkpoint travel
            # with it, and restart_from adds the checkpoint's own line.
            self.metrics.path.write_text("".join(json.dumps({"step": m["step"], **m}) + "\n" for m in history))
        for tracker in self.trackers:
            tracker.start(self.config_record, self.ckpts.fingerprint)
        self.metrics.restart_from(step if point is not None else None, saved_line)
        self.signal_guard.replay(read_metrics(self.metrics.path))
        if point is None and self.grpo["val_at_start"]:
            self.metrics.log(0, self.validate())
        max_steps = self.grpo["max_num_steps"]
        stop_metric = self.grpo["stop_at_validation_metric"]
        while step < max_steps:
            metrics = self.train_step(step + 1)
            if metrics is None:
                print(f"[end of data] grpo.max_num_epochs reached: the run ends at step {step}", flush=True)
                break
            step += 1
            last = step >= max_steps or self._epochs_done()  # upstream's is_last: the last batch of the last epoch
            val = self.validate() if self._should_validate(step, last) else {}
            metrics.update(val)
            saved = self._maybe_save(step, last, metrics)
            if saved is not None:
                metrics["timing/train/checkpointing"] = saved
            self.metrics.log(step, metrics)
            try:
                self.signal_guard.update(step, metrics[ZERO_STD_METRIC])
            except UserError:
                self.metrics.close()  # the step's line is written; stop with the guard's message
                raise
            threshold = self.grpo["stop_at_validation_metric_threshold"]
            if stop_metric and val and threshold is not None and val.get(stop_metric, -float("inf")) >= threshold:
                print(f"[early stop] {stop_metric} = {val[stop_metric]} >= {threshold}", flush=True)
                if saved is None:  # a save_period step is already written
                    self._maybe_save(step, True, metrics)
                break
        self.metrics.close()
        return self._finish(step, time.perf_counter() - wall)


def run_grpo(
    cfg: dict[str, Any],
    *,
    data_dir: Path,
    policy_path: Path,
    base_model: str,
    paths: RlvrPaths,
    config_record: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Entry point of the ``rlvr`` stage: train, then write ``paths.ckpt``, ``paths.summary`` and ``paths.metrics``.

    ``base_model`` is the HF policy (folder or hub id) the SFT checkpoint came from: what a LoRA adapter applies to.
    ``config_record`` is what ``rlvr/config.yaml`` records: the stage config as written, secrets as
    ``${oc.env:...}`` references (``cfg`` holds their values). Without it ``cfg`` is recorded, so a caller whose
    config holds secrets must pass it.
    """
    paths.work_dir.mkdir(parents=True, exist_ok=True)
    with atomic_file(paths.work_dir / "config.yaml") as fh:
        fh.write(
            "# resolved rlvr config; secrets as ${oc.env:...} references\n"
            + config_yaml(cfg if config_record is None else config_record)
        )
    controller = GRPOController(
        cfg, data_dir=data_dir, policy_path=policy_path, base_model=base_model, paths=paths, config_record=config_record
    )
    summary = None
    try:
        summary = controller.fit()
    finally:
        done = summary is not None
        for tracker in controller.trackers:
            tracker.finish(
                artifact=Path(summary["artifact"]) if done else None,
                summary_file=paths.summary if done else None,
                failed=not done,
            )
        controller.rewards.close()
        controller.workers.close()
    print(json.dumps(summary, indent=2), flush=True)
    return summary
