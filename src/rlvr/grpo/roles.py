"""The controller's workers: the policy (train + log-probs), generation, the reference policy, and rewards.

Each is a small object with picklable inputs and outputs, so that a distributed run can put it behind a Ray
actor without changing the controller. In a single process on a CPU the generation backend shares the policy's
own model (the HF model is kept in eval mode, so sampling and training see identical weights and no refit is
needed); with vLLM or a megatron-core policy the generation model is refitted from the trainer's weights before
each generation.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rlvr.config.checks import data_parallel_workers
from rlvr.config.facts import needs_reference_model
from rlvr.errors import DataError, UserError
from rlvr.generation.base import GenerationConfig, GenerationOutput, make_generation_backend
from rlvr.policy.lora import lora_settings
from rlvr.utils.atomic import atomic_dir


def load_rows(path: Path) -> list[dict]:
    """Canonical rows written by rl_prep."""
    if not path.is_file():
        raise DataError(f"{path} is missing: run data_prep/rl_prep first")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise DataError(f"{path} holds no rows")
    return rows


def checkpoint_tokenizer_dir(policy_path: Path) -> Path:
    from rlvr.convert.artifact import TOKENIZER_DIR, resolve_iteration_dir

    folder = resolve_iteration_dir(policy_path) / TOKENIZER_DIR
    if not folder.is_dir():
        raise UserError(
            f"{policy_path} has no tokenizer/ folder; convert the policy with convert/hf_to_megatron "
            f"from an HF folder that has its tokenizer files"
        )
    return folder


class PolicyWorkers:
    """Policy, generation and (when the KL weight is > 0) reference policy of a run."""

    def __init__(
        self,
        policy,
        generator,
        tokenizer,
        tokenizer_dir: Path,
        reference=None,
        *,
        logprob_batch_size: int,
        shares_model: bool,
    ):
        self.policy, self.generator, self.tokenizer = policy, generator, tokenizer
        self.tokenizer_dir = tokenizer_dir
        self.reference = reference
        self.logprob_batch_size = logprob_batch_size
        self.shares_model = shares_model
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._stale = False

    @classmethod
    def build(cls, cfg: dict[str, Any], policy_path: Path) -> PolicyWorkers:
        from transformers import AutoTokenizer

        from rlvr.convert.hf_megatron import load_hf_model_from_megatron
        from rlvr.policy.hf import HFPolicy

        policy_cfg = cfg["policy"]
        if policy_cfg["dtensor_cfg"]["enabled"]:
            # NeMo-RL's policy-worker environment (e.g. PYTORCH_CUDA_ALLOC_CONF): set before any model or Ray
            # worker exists, so the in-process policy and the workers of a local Ray inherit it.
            os.environ.update({k: str(v) for k, v in policy_cfg["dtensor_cfg"]["env_vars"].items()})
        tok_dir = Path(policy_cfg["tokenizer"]["name"] or checkpoint_tokenizer_dir(policy_path))
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        wants_reference = needs_reference_model(cfg)
        backend = policy_cfg["generation"]["backend"]
        gen_kwargs = {
            "batch_size": policy_cfg["generation_batch_size"],
            "max_total_length": policy_cfg["max_total_sequence_length"],
        }
        num_workers = data_parallel_workers(cfg["cluster"])
        if num_workers > 1 and backend == "hf" and not policy_cfg["megatron_cfg"]["enabled"]:
            # Data-parallel replicas on Ray; generation is refitted from rank 0 before each rollout. The
            # generation actor takes no CPU reservation so that the policy ranks can use every core.
            from rlvr.distributed.actors import RayGenerationWorker
            from rlvr.distributed.policy_group import RayPolicyGroup

            policy = RayPolicyGroup(policy_cfg, str(policy_path), num_workers=num_workers)
            generator = RayGenerationWorker(
                str(policy_path), str(tok_dir), precision=policy_cfg.get("precision"), num_cpus=0, **gen_kwargs
            )
            reference = (
                RayPolicyGroup(policy_cfg, str(policy_path), num_workers=num_workers, trainable=False)
                if wants_reference
                else None
            )
            return cls(
                policy,
                generator,
                tokenizer,
                tok_dir,
                reference,
                logprob_batch_size=policy_cfg["logprob_batch_size"],
                shares_model=False,
            )
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = load_hf_model_from_megatron(policy_path, policy_cfg.get("precision", "float32")).to(device)
        # LoRA wraps ``model`` in place: the reference and the generation model are plain copies taken first.
        # Generation then runs on merged weights W + s·BA, refitted after each step (no adapter matmuls per token).
        reference_model = copy.deepcopy(model).eval().requires_grad_(False) if wants_reference else None
        lora_generation_model = copy.deepcopy(model) if lora_settings(policy_cfg) is not None else None
        if policy_cfg["megatron_cfg"]["enabled"]:
            from rlvr.policy.megatron import MegatronPolicy

            policy = MegatronPolicy.from_config(
                policy_cfg, policy_path=policy_path, train_iters=cfg["grpo"]["max_num_steps"]
            )
            generation_model, shares = model, False
        else:
            policy = HFPolicy.from_config(policy_cfg, model=model)
            generation_model, shares = policy.model, True
            if lora_generation_model is not None:
                generation_model, shares = lora_generation_model, False
        if backend == "vllm":
            gen_kwargs.update(vllm_cfg=policy_cfg["generation"]["vllm_cfg"], seed=cfg["grpo"]["seed"])
        generator = make_generation_backend(backend, generation_model, tokenizer, **gen_kwargs)
        reference = None
        if wants_reference:
            reference = HFPolicy.from_config(policy_cfg, model=reference_model)
        return cls(
            policy,
            generator,
            tokenizer,
            tok_dir,
            reference,
            logprob_batch_size=policy_cfg["logprob_batch_size"],
            shares_model=shares and backend == "hf",
        )

    @property
    def has_reference(self) -> bool:
        return self.reference is not None

    def encode(self, texts: list[str]) -> list[list[int]]:
        # The prompt is already templated by rl_prep (chat template incl. any BOS text), as NeMo-RL does.
        return [self.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    def generate(self, prompt_ids: list[list[int]], cfg: GenerationConfig, *, seed: int) -> list[GenerationOutput]:
        if self._stale and not self.shares_model:
            self.generator.update_weights(
                self.policy.hf_state_dict() if hasattr(self.policy, "hf_state_dict") else self.policy.model_state()
            )
        self._stale = False
        return self.generator.generate(prompt_ids, cfg, seed=seed)

    def logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.policy.get_logprobs(
            batch["input_ids"], batch["attention_mask"], micro_batch_size=self.logprob_batch_size, filtered=True
        )

    def reference_logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # The reference pass keeps the temperature but not top-k/top-p (spec §1.3).
        return self.reference.get_logprobs(
            batch["input_ids"], batch["attention_mask"], micro_batch_size=self.logprob_batch_size, filtered=False
        )

    def train(
        self, batch: dict[str, torch.Tensor], loss_fn, global_batch_size: int, micro_batch_size: int
    ) -> dict[str, float]:
        self._stale = True
        return self.policy.train(batch, loss_fn, global_batch_size=global_batch_size, micro_batch_size=micro_batch_size)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        full = self.policy.state_dict()
        return full["model"], {k: v for k, v in full.items() if k != "model"}

    def load_state(self, model_state: dict[str, torch.Tensor], optimizer_state: dict[str, Any] | None) -> None:
        if optimizer_state is None:
            print(
                "[resume] no optimizer state in the checkpoint (checkpointing.save_optimizer=false): the "
                "optimizer restarts from scratch",
                flush=True,
            )
            load = getattr(self.policy, "load_model_state", None) or self.policy.model.load_state_dict
            load(model_state)
        else:
            self.policy.load_state_dict({"model": model_state, **optimizer_state})
        self._stale = True

    def close(self) -> None:
        """Stop actors of a distributed run (a no-op for in-process workers)."""
        for worker in (self.policy, self.generator, self.reference):
            if worker is not None and hasattr(worker, "close"):
                worker.close()

    def save_artifact(
        self,
        root: Path,
        *,
        iteration: int,
        extra: dict[str, Any],
        source_dtype=None,
        adapter_dir: Path | None = None,
        base_model: str | None = None,
    ) -> Path:
        """The trained policy as a ``checkpoint_megatron`` (written atomically; LoRA: merged weights);
        ``source_dtype``: the input model's dtype, which the HF export goes back to (the training precision may
        differ). For a LoRA policy the PEFT adapter folder ``adapter_dir`` is written too (``base_model``: what the
        adapter applies to)."""
        from rlvr.convert.hf_megatron import save_hf_model_as_megatron

        model = self.policy.hf_model() if hasattr(self.policy, "hf_model") else self.policy.model
        with atomic_dir(root) as tmp:
            save_hf_model_as_megatron(model, self.tokenizer_dir, tmp, iteration, extra, source_dtype=source_dtype)
        if adapter_dir is not None and getattr(self.policy, "is_lora", False):
            self.policy.save_adapter(adapter_dir, base_model=base_model)
        return root


@dataclass
class ScoredBatch:
    """What :meth:`RewardWorker.score` returns for ``B`` samples."""

    rewards: torch.Tensor  # [B] combined reward
    metrics: dict[str, float]  # reward_errors/* counts
    flagged: torch.Tensor | None  # [B] bool, Gym mask_sample (None for native verifiers)
    components: dict[str, torch.Tensor] = field(default_factory=dict)  # per env.reward_functions name, [B]
    failures: list[dict] | None = None  # per sample: {function name: {"kind", "detail"}} of failed checks


class RewardWorker:
    """Scores responses: the run's reward functions (the native verifiers, built-in and custom functions, see
    rlvr/rewards/custom.py), or NeMo-Gym resource servers on the Gym path.

    Native verdicts are mapped onto ``env.<task>.reward_correct/_wrong``. On the Gym path a server error is never a
    reward of 0: the client retries, then raises and the run stops (see rlvr/gym/client.py).
    """

    def __init__(self, cfg: dict[str, Any]):
        env = cfg["env"]
        self.env = env
        self.last_time = 0.0
        self.gym = None
        self.scorer = None
        if env["should_use_nemo_gym"]:
            from rlvr.gym import GymRewardClient, local_options_from_env

            self.gym = GymRewardClient(
                env["nemo_gym"],
                local_options=local_options_from_env(env),
                model_name=str(cfg["policy"].get("model_name") or "policy"),
            ).start()
        else:
            from rlvr.rewards.custom import reward_functions
            from rlvr.rewards.scorer import scorer_from_env

            self.scorer = scorer_from_env(env)
            self.functions = reward_functions(env)

    def score(self, rows: list[dict], responses: list[str]) -> ScoredBatch:
        timer = time.perf_counter()
        if self.gym is not None:
            scored = self.gym.score_detailed(rows, responses)
            batch = ScoredBatch(
                torch.tensor(scored.rewards, dtype=torch.float32),
                scored.metrics,
                torch.tensor(scored.mask_sample, dtype=torch.bool),
            )
        else:
            from rlvr.rewards.combined import score_with_functions

            result = score_with_functions(self.scorer, self.functions, rows, responses, self.env)
            self._warn_failures(result.failures, len(rows))
            batch = ScoredBatch(
                torch.tensor(result.rewards, dtype=torch.float32),
                result.metrics,
                None,
                {name: torch.tensor(v, dtype=torch.float32) for name, v in result.values.items()},
                result.failures,
            )
        self.last_time = time.perf_counter() - timer
        return batch

    def _warn_failures(self, failures: list[dict], total: int) -> None:
        """A failing reward function of the user's is shouted about, not only counted (verifier failures such as
        math-verify timeouts are routine and only counted)."""
        from rlvr.rewards.combined import failure_summary

        verifiers = {f.name for f in self.functions if f.is_verifier}
        for name, (count, first) in failure_summary(failures).items():
            if name not in verifiers:
                print(
                    f"WARNING [reward_function] {name}: {count} of {total} samples failed (first: {first})", flush=True
                )

    def close(self) -> None:
        for worker in (self.gym, self.scorer):
            if worker is not None:
                worker.close()
