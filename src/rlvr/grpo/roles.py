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

from rlvr.config.facts import needs_reference_model
from rlvr.errors import DataError, UserError
from rlvr.generation.base import GenerationBackend, GenerationConfig, GenerationOutput, make_generation_backend
from rlvr.launch.placement import PlacementPlan, plan_placement
from rlvr.policy.base import LossFunction, Policy
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
    """Policy, generation and (when the KL weight is > 0) reference policy of a run.

    ``policy`` and ``reference`` are used only through the :class:`~rlvr.policy.base.Policy` protocol, the
    generator only through :class:`~rlvr.generation.base.GenerationBackend`.
    """

    def __init__(
        self,
        policy: Policy,
        generator: GenerationBackend,
        tokenizer,
        tokenizer_dir: Path,
        reference: Policy | None = None,
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
        """The run's tokenizer, then its policy, generator and reference: data-parallel on Ray (several CPU
        workers) or in this process (HF, LoRA or megatron-core)."""
        from transformers import AutoTokenizer

        policy_cfg = cfg["policy"]
        if policy_cfg["dtensor_cfg"]["enabled"]:
            # NeMo-RL's policy-worker environment (e.g. PYTORCH_CUDA_ALLOC_CONF): set before any model or Ray
            # worker exists, so the in-process policy and the workers of a local Ray inherit it.
            os.environ.update({k: str(v) for k, v in policy_cfg["dtensor_cfg"]["env_vars"].items()})
        tok_dir = Path(policy_cfg["tokenizer"]["name"] or checkpoint_tokenizer_dir(policy_path))
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        backend = policy_cfg["generation"]["backend"]
        gen_kwargs = {
            "batch_size": policy_cfg["generation_batch_size"],
            "max_total_length": policy_cfg["max_total_sequence_length"],
        }
        plan = plan_placement(cfg)  # refuses layouts that over-subscribe or leave devices unused
        if plan.uses_ray and not policy_cfg["megatron_cfg"]["enabled"]:
            policy, generator, reference = _ray_roles(cfg, plan, policy_path, tok_dir, gen_kwargs)
            shares = False
        else:
            policy, generator, reference, shares = _in_process_roles(cfg, policy_path, tokenizer, gen_kwargs)
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
        # Colocated phases take turns on a device (rlvr.policy.offload): training hands back its optimizer state,
        # the engine wakes, is refitted and samples, then hands its memory back (vLLM sleeps) for scoring and
        # training. Each step is a no-op where nothing is shared (CPU, or generation on devices of its own).
        self.policy.offload_before_refit()
        self.generator.prepare_for_generation()
        if self._stale and not self.shares_model:
            self.generator.update_weights(self.policy.hf_state_dict())
        self._stale = False
        try:
            return self.generator.generate(prompt_ids, cfg, seed=seed)
        finally:
            self.generator.finish_generation()

    def logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.policy.prepare_for_lp_inference()
        return self.policy.get_logprobs(
            batch["input_ids"], batch["attention_mask"], micro_batch_size=self.logprob_batch_size, filtered=True
        )

    def reference_logprobs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        # The reference pass keeps the temperature but not top-k/top-p (spec §1.3).
        return self.reference.get_logprobs(
            batch["input_ids"], batch["attention_mask"], micro_batch_size=self.logprob_batch_size, filtered=False
        )

    def train(
        self, batch: dict[str, torch.Tensor], loss_fn: LossFunction, global_batch_size: int, micro_batch_size: int
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
            self.policy.load_model_state(model_state)
        else:
            self.policy.load_state_dict({"model": model_state, **optimizer_state})
        self._stale = True

    def close(self) -> None:
        """Stop actors of a distributed run (a no-op for in-process workers); the policy last, since its device
        group holds the others' GPU slots."""
        if self.reference is not None:
            self.reference.close()
        # GenerationBackend has no close(): the HF backend holds nothing; vLLM and the Ray replicas do.
        close_generator = getattr(self.generator, "close", None)
        if close_generator is not None:
            close_generator()
        self.policy.close()

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

        model = self.policy.hf_model()
        with atomic_dir(root) as tmp:
            save_hf_model_as_megatron(model, self.tokenizer_dir, tmp, iteration, extra, source_dtype=source_dtype)
        if adapter_dir is not None:
            self.policy.save_adapter(adapter_dir, base_model=base_model)  # writes nothing unless LoRA
        return root


def _ray_roles(
    cfg: dict[str, Any], plan: PlacementPlan, policy_path: Path, tok_dir: Path, gen_kwargs: dict[str, Any]
) -> tuple[Policy, GenerationBackend, Policy | None]:
    """Policy group, generation replicas and (KL > 0) reference group on Ray, placed as ``plan`` says.

    FSDP2-sharded ranks; one generation actor per generation device (rank ``i``'s device when colocated, else a
    GPU of its own), each refitted from the gathered weights before a rollout. Generation actors reserve no CPU
    so that the policy ranks can use every core.
    """
    from rlvr.distributed.actors import GenerationReplicas, RayGenerationWorker
    from rlvr.distributed.policy_group import RayPolicyGroup

    policy_cfg = cfg["policy"]
    backend = policy_cfg["generation"]["backend"]
    policy = RayPolicyGroup(policy_cfg, str(policy_path), num_workers=plan.train_ranks)
    if backend == "vllm":
        gen_kwargs = {**gen_kwargs, **_vllm_kwargs(cfg)}
    replicas = [
        RayGenerationWorker(
            str(policy_path),
            str(tok_dir),
            precision=policy_cfg["precision"],
            backend=backend,
            num_cpus=0,
            device_slot=(policy.devices, i) if plan.colocated else None,
            **gen_kwargs,
        )
        for i in range(len(plan.devices("generation")))
    ]
    generator = GenerationReplicas(replicas)
    reference = None
    if needs_reference_model(cfg):
        reference = RayPolicyGroup(
            policy_cfg, str(policy_path), num_workers=plan.train_ranks, trainable=False, devices=policy.devices
        )
    return policy, generator, reference


def _in_process_roles(
    cfg: dict[str, Any], policy_path: Path, tokenizer, gen_kwargs: dict[str, Any]
) -> tuple[Policy, GenerationBackend, Policy | None, bool]:
    """The policy (HF, LoRA or megatron-core), its generation backend and the reference in this process; the flag
    says whether generation samples from the policy's own model (no refit needed)."""
    from rlvr.convert.hf_megatron import load_hf_model_from_megatron
    from rlvr.policy.hf import HFPolicy

    policy_cfg = cfg["policy"]
    wants_reference = needs_reference_model(cfg)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_hf_model_from_megatron(policy_path, policy_cfg["precision"]).to(device)
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
    backend = policy_cfg["generation"]["backend"]
    if backend == "vllm":
        gen_kwargs = {**gen_kwargs, **_vllm_kwargs(cfg)}
    generator = make_generation_backend(backend, generation_model, tokenizer, **gen_kwargs)
    reference = HFPolicy.from_config(policy_cfg, model=reference_model) if wants_reference else None
    return policy, generator, reference, shares


def _vllm_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """The vLLM backend's own arguments; a colocated engine sleeps while the policy trains (sleep mode)."""
    generation = cfg["policy"]["generation"]
    return {
        "vllm_cfg": generation["vllm_cfg"],
        "seed": cfg["grpo"]["seed"],
        "sleep_mode": generation["colocated"]["enabled"],
    }


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
                model_name=str(cfg["policy"]["model_name"] or "policy"),
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
