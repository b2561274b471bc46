"""The rollout half of a GRPO step: which prompts come next, generate and score them, shape the rewards.

:class:`RolloutCollection` is mixed into :class:`~rlvr.grpo.controller.GRPOController`: the data order (epochs,
``data.shuffle``, ``consumed_prompts``: the data position a resume continues from), one generation batch
(repeat each prompt, generate, score), reward scaling and shaping, and dynamic sampling (``grpo.use_dynamic_sampling``:
generate more batches while short of rows with reward spread). It reads the controller's ``cfg``, ``grpo``,
``train_rows``, ``train_prompt_ids``, ``gen_cfg``, ``workers``, ``rewards``, ``sampler``, ``loo`` and
``consumed_prompts``.
"""

from __future__ import annotations

import torch

from rlvr.errors import UserError
from rlvr.generation.base import GenerationConfig
from rlvr.grpo.advantages import group_baseline_and_std
from rlvr.grpo.rollout import Rollout, repeat_prompts
from rlvr.grpo.shaping import scale_rewards, shape_rewards


class RolloutCollection:
    """Prompt order, rollouts and dynamic sampling of :class:`~rlvr.grpo.controller.GRPOController`."""

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        n = len(self.train_rows)
        if not self.cfg["data"]["shuffle"]:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(self.grpo["seed"] * 7919 + epoch))

    def _prompts_per_batch(self) -> int:
        """Prompts of one generation batch: ``num_prompts_per_step`` (× ``batch_multiplier`` with dynamic sampling)."""
        dynamic = self.grpo["use_dynamic_sampling"]
        return int(self.grpo["num_prompts_per_step"] * (self.grpo["batch_multiplier"] if dynamic else 1))

    def _epochs_done(self) -> bool:
        """No whole generation batch is left in ``max_num_epochs``: the step just trained is the last one."""
        count = self._prompts_per_batch()
        per_epoch = len(self.train_rows) // count * count
        return self.consumed_prompts >= per_epoch * self.grpo["max_num_epochs"]

    def _next_prompts(self, count: int) -> list[int] | None:
        """The next ``count`` prompt indices (drop_last within an epoch); None after ``max_num_epochs``."""
        per_epoch = len(self.train_rows) // count * count
        if per_epoch == 0:
            raise UserError(
                f"the training set has {len(self.train_rows)} prompts, fewer than "
                f"grpo.num_prompts_per_step × batch_multiplier = {count}"
            )
        epoch, within = divmod(self.consumed_prompts, per_epoch)
        if epoch >= self.grpo["max_num_epochs"]:
            return None
        self.consumed_prompts += count
        return self._epoch_order(epoch)[within : within + count].tolist()

    def _rollout(
        self,
        prompt_index: list[int],
        rows: list[dict],
        prompt_ids: list[list[int]],
        times: int,
        cfg: GenerationConfig,
        seed: int,
    ) -> Rollout:
        sel_rows = [rows[i] for i in prompt_index]
        sel_ids = [prompt_ids[i] for i in prompt_index]
        rep_rows, rep_ids, groups = repeat_prompts(sel_rows, sel_ids, 0, times)
        outputs = self.workers.generate(rep_ids, cfg, seed=seed)
        scored = self.rewards.score(rep_rows, [o.text for o in outputs])
        return Rollout(
            rep_rows,
            groups,
            rep_ids,
            outputs,
            raw_rewards=scored.rewards,
            reward_errors=scored.metrics,
            flagged=scored.flagged,
            reward_components=scored.components,
            reward_failures=scored.failures,
        )

    def _shape(self, rollout: Rollout) -> None:
        rewards = rollout.raw_rewards.clone()
        scaling = self.grpo["reward_scaling"]
        if scaling["enabled"]:
            rewards = scale_rewards(
                rewards, **{k: scaling[k] for k in ("source_min", "source_max", "target_min", "target_max")}
            )
        shaping = self.grpo["reward_shaping"]
        if shaping["enabled"]:
            rewards = shape_rewards(
                rewards,
                truncated=rollout.truncated,
                response_lengths=rollout.response_lengths,
                **{
                    k: shaping[k]
                    for k in (
                        "stop_properly_penalty_coef",
                        "overlong_buffer_length",
                        "overlong_buffer_penalty",
                        "max_response_length",
                    )
                },
            )
        rollout.rewards = rewards

    def _collect(self, step: int) -> tuple[Rollout, dict[str, float]] | None:
        """One step's rollout, regenerating while dynamic sampling is short of rows."""
        g = self.grpo["num_generations_per_prompt"]
        dynamic = self.grpo["use_dynamic_sampling"]
        count = self._prompts_per_batch()
        parts, offset, batches = [], 0, 0
        while True:
            index = self._next_prompts(count)
            if index is None:
                if parts:  # dynamic sampling was still short of rows when the data ran out
                    print(
                        f"[end of data] step {step}: grpo.max_num_epochs={self.grpo['max_num_epochs']} ran out "
                        f"after {batches} generation batch(es) with too few rows of non-zero reward spread; the "
                        f"partial step is not trained",
                        flush=True,
                    )
                return None
            batches += 1
            part = self._rollout(
                index,
                self.train_rows,
                self.train_prompt_ids,
                g,
                self.gen_cfg,
                seed=self.grpo["seed"] * 1_000_003 + step * 101 + batches,
            )
            part.group_ids = part.group_ids + offset
            offset += len(index)
            self._shape(part)
            if not dynamic:
                return part, {}
            # Dynamic sampling filters on the unshaped reward's spread, per row (LOO: the peers' spread).
            _, std = group_baseline_and_std(part.raw_rewards, part.group_ids, leave_one_out=self.loo)
            result = self.sampler.add({"row": torch.arange(len(part.rows)) + sum(len(p.rows) for p in parts)}, std)
            parts.append(part)
            if result.complete:
                merged = Rollout.concat(parts).select(result.batch["row"])
                return merged, {
                    "train/dynamic_sampling_num_gen_batches": result.num_gen_batches,
                    "train/dynamic_sampling_num_discarded_valid_samples": result.num_discarded_valid_samples,
                }
