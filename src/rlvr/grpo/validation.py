"""Validation of a GRPO run: ``grpo.val_*`` (when it runs, on how many prompts, how many samples each).

:class:`Validation` is mixed into :class:`~rlvr.grpo.controller.GRPOController`; it generates with the validation
sampling settings (``val_gen_cfg``) through the controller's ``_rollout`` and reports ``validation/accuracy``,
``validation/avg_length``, ``validation/pass@k`` and, with ``env.reward_functions``, ``validation/reward/<name>``.
It reads the controller's ``cfg``, ``grpo``, ``val_rows``, ``val_prompt_ids``, ``val_gen_cfg`` and
``log_reward_functions``.
"""

from __future__ import annotations

import time

import torch

from rlvr.grpo.rollout import reward_component_metrics
from rlvr.grpo.shaping import compute_validation_scores


class Validation:
    """``validate`` and its schedule, for :class:`~rlvr.grpo.controller.GRPOController`."""

    def validate(self) -> dict[str, float]:
        start = time.perf_counter()
        k = self.grpo["val_num_generations_per_prompt"]
        n = (
            len(self.val_rows)
            if self.grpo["max_val_samples"] is None
            else min(self.grpo["max_val_samples"], len(self.val_rows))
        )
        size = self.grpo["val_batch_size"] or n  # null (the default): the whole validation set in one batch
        n = n // size * size if n >= size else n  # whole batches, as upstream (config checks forbid a remainder)
        rewards, groups, lengths, samples, components = [], [], [], [], []
        for start_idx in range(0, n, size):
            index = list(range(start_idx, min(start_idx + size, n)))
            part = self._rollout(
                index,
                self.val_rows,
                self.val_prompt_ids,
                k,
                self.val_gen_cfg,
                seed=self.grpo["seed"] + 12_345 + start_idx,
            )
            rewards.append(part.raw_rewards)
            groups.append(part.group_ids + start_idx)
            lengths.append(part.response_lengths.float())
            samples.extend(zip(part.rows, part.outputs, part.raw_rewards.tolist()))
            components.append(part.reward_components)
        scores = compute_validation_scores(torch.cat(rewards), torch.cat(groups))
        out = {
            "validation/accuracy": scores["accuracy"],
            "validation/avg_length": float(torch.cat(lengths).mean()),
            "timing/validation/total_validation_time": time.perf_counter() - start,
        }
        if k > 1:
            out[f"validation/pass@{k}"] = scores["pass_k"]
        if self.log_reward_functions:
            joined = {name: torch.cat([c[name] for c in components]) for name in components[0]}
            out.update(reward_component_metrics(joined, "validation/"))
        for row, output, reward in samples[: self.cfg["logger"]["num_val_samples_to_print"]]:
            print(f"[val] {row['problem']!r} -> {output.text!r} (reward {reward})", flush=True)
        return out

    def _should_validate(self, step: int, last: bool) -> bool:
        period, start_at = self.grpo["val_period"], self.grpo["val_start_at"]
        return (period > 0 and step >= start_at and step % period == 0) or (last and self.grpo["val_at_end"])
