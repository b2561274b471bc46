"""Small, deterministic stand-ins for the controller's roles, so that a GRPO step runs in milliseconds.

* :class:`FakeGenerator`: scripted replies per prompt text (the n-th sample of a prompt, counted over the whole
  run, gets the n-th reply of its script, cycling), EOS appended when it fits in ``max_new_tokens``, else cut and
  ``truncated``, as the real backends do. Its log-probs are :func:`token_logprob` (+ a reply's ``lp_shift``).
* :class:`FakePolicy`: log-probs ``scale ·`` :func:`token_logprob` at *every* position, prompt and padding
  included, so only the batch's masks decide what trains; ``train`` runs the real loss on each of the
  ``B / global_batch_size`` optimizer batches and records the batch, the losses and the log-prob gradients.
* :class:`FakeRewards`: a reply is right iff it equals the row's ``ground_truth``; verdicts map onto
  ``env.math.reward_wrong/_correct`` as :class:`rlvr.grpo.roles.RewardWorker` maps them.
* :func:`grpo_config`: a real, validated step config (``-c cpu`` with small sizes); :func:`build_controller` the
  real :class:`GRPOController` over real :class:`PolicyWorkers` holding the fakes.

Tokens are one character each (``tests/unit/conftest.py``'s tokenizer: ``<pad>`` 0, ``<eos>`` 1, ``0``..``9``
4..13, ``+`` 14, ``=`` 15, ``a b c d x`` 16..20), so a prompt of n characters has n tokens.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from rlvr.config import load_step_config
from rlvr.config.facts import needs_reference_model
from rlvr.errors import ConfigError
from rlvr.generation.base import GenerationConfig, GenerationOutput
from rlvr.grpo.controller import GRPOController, RlvrPaths
from rlvr.grpo.roles import PolicyWorkers, ScoredBatch
from rlvr.steps.index import resolve_step
from tests.unit.conftest import EOS, build_tokenizer

RLVR = resolve_step("rl/nemo_rl/rlvr")
# Small sizes on top of -c cpu; every test adds the keys it is about. Validation, checkpoints, clipping and
# shuffling are off unless a test turns them on, so that each test sees only its own switch.
BASE_OVERRIDES = [
    "policy.model_name=/unused/policy",
    "data.train.data_path=/unused/train.jsonl",
    "data.validation.data_path=/unused/val.jsonl",
    "data.shuffle=false",
    "grpo.num_prompts_per_step=2",
    "grpo.num_generations_per_prompt=4",
    "grpo.max_num_steps=1",
    "grpo.val_period=0",
    "grpo.val_at_start=false",
    "grpo.val_at_end=false",
    "grpo.max_val_samples=null",
    "grpo.val_batch_size=null",
    "grpo.advantage_clip_low=null",
    "grpo.advantage_clip_high=null",
    "policy.train_global_batch_size=8",
    "policy.train_micro_batch_size=4",
    "policy.generation.max_new_tokens=8",
    "checkpointing.enabled=false",
    "logger.tensorboard_enabled=false",
]

# (prompt, ground truth): four training prompts (two steps per epoch at two prompts per step), two validation ones.
TRAIN = [("1+1=", "2"), ("2+2=", "4"), ("3+3=", "6"), ("4+4=", "8")]
VAL = [("1+2=", "3"), ("2+3=", "5")]


def grpo_config(*overrides: str) -> dict[str, Any]:
    """The resolved config of ``rl/nemo_rl/rlvr -c cpu`` with :data:`BASE_OVERRIDES` and ``overrides``, validated
    like a user's (so a test cannot run a combination the loader refuses)."""
    return load_step_config(RLVR, "cpu", [*BASE_OVERRIDES, *overrides]).resolved


def token_logprob(token_ids: torch.Tensor) -> torch.Tensor:
    """The fakes' log-prob of a token, a function of its id only: ``-0.1 · (1 + id mod 4)``."""
    return -0.1 * (1 + torch.as_tensor(token_ids) % 4).to(torch.float32)


@dataclasses.dataclass(frozen=True)
class Reply:
    """A scripted reply; ``lp_shift`` is added to the sampler's log-probs (a sampler/trainer mismatch)."""

    text: str
    lp_shift: float = 0.0


@dataclasses.dataclass(frozen=True)
class GenerateCall:
    prompts: list[str]
    cfg: GenerationConfig
    seed: int | None


class FakeGenerator:
    """A generation backend that replies from a script: ``{prompt text: [reply, ...]}``."""

    def __init__(self, tokenizer, script: Mapping[str, Sequence[str | Reply]]):
        self.tokenizer = tokenizer
        self.script = {p: [r if isinstance(r, Reply) else Reply(r) for r in replies] for p, replies in script.items()}
        self.served: Counter[str] = Counter()
        self.calls: list[GenerateCall] = []
        self.weight_updates: list[dict[str, torch.Tensor]] = []
        self.phases: list[str] = []  # memory hand-back calls, in order

    def generate(self, prompt_token_ids: list[list[int]], cfg: GenerationConfig, *, seed: int | None):
        prompts = [self.tokenizer.decode(ids) for ids in prompt_token_ids]
        self.calls.append(GenerateCall(prompts, cfg, seed))
        return [self._reply(prompt, cfg) for prompt in prompts]

    def _reply(self, prompt: str, cfg: GenerationConfig) -> GenerationOutput:
        replies = self.script[prompt]
        reply = replies[self.served[prompt] % len(replies)]
        self.served[prompt] += 1
        ids = self.tokenizer(reply.text, add_special_tokens=False)["input_ids"] + [EOS]
        truncated = len(ids) > cfg.max_new_tokens
        ids = ids[: cfg.max_new_tokens]
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        logprobs = (token_logprob(torch.tensor(ids)) + reply.lp_shift).tolist()
        return GenerationOutput(token_ids=ids, logprobs=logprobs, text=text, truncated=truncated)

    def update_weights(self, state_dict: Mapping[str, Any]) -> None:
        self.weight_updates.append(dict(state_dict))

    def prepare_for_generation(self) -> None:
        self.phases.append("prepare_for_generation")

    def finish_generation(self) -> None:
        self.phases.append("finish_generation")


@dataclasses.dataclass
class OptimizerStep:
    rows: range  # rows of the GRPO batch in this optimizer step
    loss: float
    logprob_grad: torch.Tensor  # d loss / d log-probs, [rows, S]


@dataclasses.dataclass
class TrainCall:
    batch: dict[str, torch.Tensor]  # what the controller handed to train (cloned)
    global_batch_size: int
    micro_batch_size: int
    steps: list[OptimizerStep]


class FakePolicy:
    """A policy whose log-probs are ``scale ·`` :func:`token_logprob`; training changes only a step counter."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale
        self.logprob_calls: list[bool] = []  # the ``filtered`` flag of each get_logprobs call
        self.trained: list[TrainCall] = []
        self.scheduler_steps = 0
        self.version = 0  # optimizer steps taken (the "weights")
        self.loaded: list[dict[str, Any]] = []
        self.saved_versions: list[int] = []  # the version of each state_dict taken (one per checkpoint save)

    def logprobs_of(self, input_ids: torch.Tensor) -> torch.Tensor:
        """``[B, S]``: a value at every position (prompt and padding too); the masks must ignore what is not trained."""
        return self.scale * token_logprob(input_ids)

    def get_logprobs(self, input_ids, attention_mask, *, micro_batch_size: int, filtered: bool = True):
        self.logprob_calls.append(filtered)
        return self.logprobs_of(input_ids)

    def train(self, batch, loss_fn, *, global_batch_size: int, micro_batch_size: int) -> dict[str, float]:
        """As a real policy: ``B / global_batch_size`` optimizer steps (each normalised by its own valid counts),
        then one scheduler step."""
        total = int(batch["input_ids"].shape[0])
        if total % global_batch_size:
            raise ConfigError(f"{total} rows do not split into batches of {global_batch_size}")
        call = TrainCall({k: v.clone() for k, v in batch.items()}, global_batch_size, micro_batch_size, [])
        for start in range(0, total, global_batch_size):
            rows = range(start, start + global_batch_size)
            data = {k: v[start : start + global_batch_size] for k, v in batch.items()}
            lp = self.logprobs_of(data["input_ids"]).requires_grad_()
            valid = data["token_mask"] * data["sample_mask"].unsqueeze(-1)
            loss, _ = loss_fn(lp, data, data["sample_mask"].sum(), valid.sum())
            loss.backward()
            call.steps.append(OptimizerStep(rows, float(loss.detach()), lp.grad))
            self.version += 1
        self.scheduler_steps += 1
        self.trained.append(call)
        losses = [s.loss for s in call.steps]
        return {"loss": sum(losses) / len(losses), "num_optimizer_steps": float(len(losses))}

    def model_state(self) -> dict[str, torch.Tensor]:
        return {"version": torch.tensor(float(self.version))}

    def state_dict(self) -> dict[str, Any]:
        self.saved_versions.append(self.version)
        return {"model": self.model_state(), "optimizer": {"steps": self.version}}

    def load_model_state(self, model_state: Mapping[str, torch.Tensor]) -> None:
        self.version = int(model_state["version"])
        self.loaded.append(dict(model_state))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.load_model_state(state["model"])

    # The rest of rlvr.policy.base.Policy: the "weights" are the version counter, refit sends it as the state.
    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        return self.model_state()

    def hf_model(self) -> torch.nn.Module:
        raise NotImplementedError("the fake policy has no model to export (build_controller records the export)")

    def save_adapter(self, folder, *, base_model: str | None) -> None:
        return None

    def offload_before_refit(self) -> None:
        pass

    def prepare_for_lp_inference(self) -> None:
        pass

    def close(self) -> None:
        pass


class FakeRewards:
    """The reward worker's contract; a reply is right iff it equals the row's ``ground_truth``."""

    def __init__(self, env: Mapping[str, Any], flag_marker: str | None = None):
        self.wrong, self.right = env["math"]["reward_wrong"], env["math"]["reward_correct"]
        self.flag_marker = flag_marker  # replies containing it are flagged mask_sample (NeMo-Gym style)
        self.last_time = 0.0
        self.closed = False

    def score(self, rows: list[dict], responses: list[str]) -> ScoredBatch:
        verdicts = torch.tensor([float(text == row["ground_truth"]) for row, text in zip(rows, responses)])
        flagged = None if self.flag_marker is None else torch.tensor([self.flag_marker in t for t in responses])
        return ScoredBatch(self.wrong + (self.right - self.wrong) * verdicts, {}, flagged)

    def close(self) -> None:
        self.closed = True


class RecordingRoles(PolicyWorkers):
    """The real roles object holding the fakes; the final export is recorded instead of written (the fake policy
    has no transformers model; the export is tested in tests/unit/convert and the workflow tests)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.exported: list[dict[str, Any]] = []

    def save_artifact(self, root: Path, *, iteration: int, extra: dict[str, Any], **kwargs) -> Path:
        self.exported.append({"root": root, "iteration": iteration, "extra": extra, **kwargs})
        return root


@dataclasses.dataclass
class Harness:
    controller: GRPOController
    policy: FakePolicy
    reference: FakePolicy | None
    generator: FakeGenerator
    rewards: FakeRewards
    roles: RecordingRoles
    run_dir: Path

    def metrics_lines(self) -> list[dict[str, Any]]:
        path = self.run_dir / "rlvr" / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


def row_values(batch, key="advantages"):
    """One value per row: ``batch[key]`` is the same on every generated token of a row (checked)."""
    tm = batch["token_mask"].bool()
    values = []
    for i in range(tm.shape[0]):
        on_tokens = batch[key][i][tm[i]]
        assert torch.all(on_tokens == on_tokens[0]), f"row {i}: {key} differs between tokens"
        values.append(float(on_tokens[0]))
    return values


def _write_rows(path: Path, pairs: Sequence[tuple[str, str]]) -> None:
    rows = [
        {"index": i, "task_name": "math", "prompt": p, "problem": p, "ground_truth": gt, "source": f"t:{i + 1}"}
        for i, (p, gt) in enumerate(pairs)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_policy_folder(folder: Path) -> Path:
    """A checkpoint_megatron stub: the controller reads only its run_config.yaml (the export's dtype)."""
    (folder / "iter_0000000").mkdir(parents=True, exist_ok=True)
    (folder / "latest_checkpointed_iteration.txt").write_text("0")
    (folder / "iter_0000000" / "run_config.yaml").write_text(
        "model:\n  hf_config: {architectures: [LlamaForCausalLM]}\n  source_dtype: bfloat16\n"
    )
    return folder


def build_controller(
    tmp_path: Path,
    cfg: dict[str, Any],
    script: Mapping[str, Sequence[str | Reply]],
    *,
    train: Sequence[tuple[str, str]] = TRAIN,
    val: Sequence[tuple[str, str]] = VAL,
    shares_model: bool = True,
    policy: Any = None,
    flag_marker: str | None = None,
) -> Harness:
    """A real controller over fakes in ``tmp_path`` (data, stub policy folder, run folder). The reference policy
    exists exactly when the real builder would make one (``needs_reference_model``); its log-probs are twice the
    policy's, so the per-token KL between them varies with the token."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(parents=True, exist_ok=True)  # a second controller over the same folders resumes
    _write_rows(data_dir / "train.jsonl", train)
    _write_rows(data_dir / "val.jsonl", val)
    tokenizer = build_tokenizer()
    policy = FakePolicy() if policy is None else policy
    reference = FakePolicy(scale=2.0) if needs_reference_model(cfg) else None
    generator = FakeGenerator(tokenizer, script)
    roles = RecordingRoles(
        policy,
        generator,
        tokenizer,
        tmp_path / "tokenizer",
        reference,
        logprob_batch_size=cfg["policy"]["logprob_batch_size"],
        shares_model=shares_model,
    )
    rewards = FakeRewards(cfg["env"], flag_marker)
    run_dir = tmp_path / "run"
    work = run_dir / "rlvr"  # as rules/rlvr.smk lays the rlvr rule's outputs out
    paths = RlvrPaths(
        ckpt=work / "checkpoint_megatron", summary=work / "summary.json", metrics=work / "metrics.jsonl", work_dir=work
    )
    policy_path = _write_policy_folder(tmp_path / "policy")
    controller = GRPOController(
        cfg,
        data_dir=data_dir,
        policy_path=policy_path,
        base_model=str(policy_path),
        paths=paths,
        workers=roles,
        rewards=rewards,
    )
    return Harness(controller, policy, reference, generator, rewards, roles, run_dir)
