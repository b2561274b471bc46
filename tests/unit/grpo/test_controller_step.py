"""One GRPO step of the real controller over fakes (tests/unit/grpo/fakes.py): which rows are generated, which
rewards and advantages they get, which masks and log-probs reach the loss, for each ``grpo.*`` / ``loss_fn.*``
switch the step reads. Expected values are computed by hand from the scripted rewards.

Notation in the comments: a group's rewards ``[r_1..r_G]``; LOO = leave-one-out (baseline and Bessel std of the
peers); ``S3 = sqrt(1/3)``, the Bessel std of ``{1, 0, 0}`` and of ``{1, 1, 0}``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from rlvr.errors import ConfigError
from rlvr.policy.hf import HFPolicy
from tests.unit.conftest import EOS, build_model
from tests.unit.grpo.fakes import Reply, build_controller, grpo_config, row_values, token_logprob

S3 = math.sqrt(1 / 3)
EPS = 1e-6  # added to the std before dividing (advantages.NORMALIZE_EPSILON, as upstream)
# Step 1 takes the first two training prompts (data.shuffle=false): rewards [1,0,1,0] and [1,1,1,0].
MIXED = {"1+1=": ["2", "3", "2", "3"], "2+2=": ["4", "4", "4", "xx"]}


def run_step(tmp_path, cfg, script=MIXED, **kwargs):
    """Step 1 of a controller over fakes: (metrics, the batch the policy trained on, the harness)."""
    h = build_controller(tmp_path, cfg, script, **kwargs)
    metrics = h.controller.train_step(1)
    return metrics, h.policy.trained[-1].batch, h


def test_a_step_generates_each_prompt_G_times_and_trains_on_every_row(tmp_path):
    """num_prompts_per_step=2 × num_generations_per_prompt=4: one generation call with each prompt repeated
    contiguously, one train call on the 8 rows, laid out [prompt | reply + EOS | padding]."""
    metrics, batch, h = run_step(tmp_path, grpo_config())
    assert [c.prompts for c in h.generator.calls] == [["1+1="] * 4 + ["2+2="] * 4]
    assert batch["input_ids"].shape == (8, 7)  # 4 prompt tokens + "xx" + EOS is the longest row
    ids = h.roles.encode(["1+1=2", "2+2=xx"])
    assert batch["input_ids"][0].tolist() == [*ids[0], EOS, 0]  # pad id 0
    assert batch["input_ids"][7].tolist() == [*ids[1], EOS]
    assert batch["token_mask"][0].tolist() == [0, 0, 0, 0, 1, 1, 0]
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 1, 1, 0]
    assert batch["rewards"].tolist() == [1, 0, 1, 0, 1, 1, 1, 0]
    assert metrics["train/reward"] == 5 / 8 and metrics["train/num_optimizer_steps"] == 1
    assert metrics["train/mean_gen_tokens_per_sample"] == 17 / 8


@pytest.mark.parametrize(
    ("normalize", "loo", "expected"),
    [
        # LOO: [1,0,0,0] row 0's peers are all 0 (std 0: the raw 1 - 0 stays); rows 1-3 see {1,0,0}.
        # [1,1,0,0]: a 1 sees {1,0,0} (mean 1/3), a 0 sees {1,1,0} (mean 2/3), std S3 for both.
        (True, True, [1.0, *[-1 / 3 / (S3 + EPS)] * 3, *[2 / 3 / (S3 + EPS)] * 2, *[-2 / 3 / (S3 + EPS)] * 2]),
        (False, True, [1.0, -1 / 3, -1 / 3, -1 / 3, 2 / 3, 2 / 3, -2 / 3, -2 / 3]),
        # Whole group: [1,0,0,0] mean 1/4, std 1/2; [1,1,0,0] mean 1/2, std S3.
        (
            True,
            False,
            [0.75 / (0.5 + EPS), *[-0.25 / (0.5 + EPS)] * 3, *[0.5 / (S3 + EPS)] * 2, *[-0.5 / (S3 + EPS)] * 2],
        ),
        (False, False, [0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5]),
    ],
)
def test_advantages_follow_normalize_rewards_and_leave_one_out(tmp_path, normalize, loo, expected):
    cfg = grpo_config(f"grpo.normalize_rewards={normalize}", f"grpo.use_leave_one_out_baseline={loo}")
    script = {"1+1=": ["2", "3", "3", "3"], "2+2=": ["4", "4", "x", "x"]}
    _, batch, _ = run_step(tmp_path, cfg, script)
    assert batch["rewards"].tolist() == [1, 0, 0, 0, 1, 1, 0, 0]
    assert_close(row_values(batch), expected, rtol=0, atol=1e-6)


def test_advantages_are_clipped_after_normalisation(tmp_path):
    """advantage_clip_low/high clamp the normalised values: [1.5, -0.5 ×3 | ±0.866 ×2] -> [1.0, -0.5 | 0.866, -0.6]."""
    cfg = grpo_config(
        "grpo.use_leave_one_out_baseline=false", "grpo.advantage_clip_low=-0.6", "grpo.advantage_clip_high=1.0"
    )
    metrics, batch, _ = run_step(tmp_path, cfg, {"1+1=": ["2", "3", "3", "3"], "2+2=": ["4", "4", "x", "x"]})
    high = 0.5 / (S3 + EPS)
    low = -0.25 / (0.5 + EPS)
    assert_close(row_values(batch), [1.0, low, low, low, high, high, -0.6, -0.6], rtol=0, atol=1e-6)
    assert metrics["train/advantages/max"] == 1.0 and metrics["train/advantages/min"] == pytest.approx(-0.6)


def test_a_clip_range_upside_down_is_refused_before_the_run():
    with pytest.raises(ConfigError, match="advantage_clip_low"):
        grpo_config("grpo.advantage_clip_low=1.0", "grpo.advantage_clip_high=-1.0")


def test_dapo_overlong_penalty_shapes_the_rewards_the_advantages_see(tmp_path):
    """max_response_length = max_new_tokens = 8, buffer 4: expected length 4; a reply of n tokens (EOS counted)
    loses max(n - 4, 0) / 4. "xxxx"+EOS: -0.25; "xxxxxx"+EOS: -0.75; 9 characters are cut to 8 tokens: -1."""
    cfg = grpo_config("grpo.reward_shaping.enabled=true", "grpo.reward_shaping.overlong_buffer_length=4")
    script = {"1+1=": ["2", "xxxx", "xxxxxx", "xxxxxxxxx"], "2+2=": ["4"]}
    metrics, batch, _ = run_step(tmp_path, cfg, script)
    assert batch["rewards"].tolist() == [1.0, -0.25, -0.75, -1.0, 1.0, 1.0, 1.0, 1.0]
    assert metrics["train/raw_reward"] == 5 / 8 and metrics["train/reward"] == pytest.approx(3 / 8)
    assert metrics["train/truncation_rate"] == 1 / 8


def test_stop_properly_penalty_scales_truncated_rewards_only(tmp_path):
    """stop_properly_penalty_coef=0.5 replaces the DAPO penalty: a truncated reply's -1 becomes -0.5."""
    cfg = grpo_config(
        "env.math.reward_wrong=-1.0",
        "grpo.reward_shaping.enabled=true",
        "grpo.reward_shaping.stop_properly_penalty_coef=0.5",
    )
    _, batch, _ = run_step(tmp_path, cfg, {"1+1=": ["2", "xxxxxxx", "xxxxxxxxx", "3"], "2+2=": ["4"]})
    assert batch["rewards"].tolist() == [1.0, -1.0, -0.5, -1.0, 1.0, 1.0, 1.0, 1.0]


def test_reward_scaling_maps_the_clamped_source_range_before_shaping(tmp_path):
    """Verifier rewards 4 (right) / -2 (wrong); scaling clamps to [0, 2] and maps onto [-1, 1]: 4 -> 1, -2 -> -1.
    Shaping comes after: "xxxx"+EOS is -1 - 0.25 (shaping first would give clamp(-2.25) -> -1)."""
    cfg = grpo_config(
        "env.math.reward_correct=4.0",
        "env.math.reward_wrong=-2.0",
        "grpo.reward_scaling.enabled=true",
        "grpo.reward_scaling.source_max=2.0",
        "grpo.reward_scaling.target_min=-1.0",
        "grpo.reward_shaping.enabled=true",
        "grpo.reward_shaping.overlong_buffer_length=4",
    )
    metrics, batch, _ = run_step(tmp_path, cfg, {"1+1=": ["2", "3", "xxxx", "2"], "2+2=": ["4"]})
    assert batch["rewards"].tolist() == [1.0, -1.0, -1.25, 1.0, 1.0, 1.0, 1.0, 1.0]
    assert metrics["train/raw_reward"] == (4 * 6 - 2 * 2) / 8


def test_overlong_filtering_masks_truncated_rows_that_still_shape_the_baseline(tmp_path):
    """Row 1 is cut at 8 tokens: sample_mask 0, no gradient. Row 0's LOO peers stay {0, 1, 0} (the truncated 0
    included): (1 - 1/3) / S3; without it the peers {1, 0} would give (1 - 1/2) / sqrt(1/2)."""
    cfg = grpo_config("grpo.overlong_filtering=true")
    _, batch, h = run_step(tmp_path, cfg, {"1+1=": ["2", "xxxxxxxxx", "2", "3"], "2+2=": MIXED["2+2="]})
    assert batch["sample_mask"].tolist() == [1, 0, 1, 1, 1, 1, 1, 1]
    assert row_values(batch)[0] == pytest.approx(2 / 3 / (S3 + EPS))
    grad = h.policy.trained[-1].steps[0].logprob_grad
    assert torch.count_nonzero(grad[1]) == 0 and torch.count_nonzero(grad[0]) == 2


def test_overlong_filtering_off_keeps_truncated_rows_in_the_loss(tmp_path):
    _, batch, _ = run_step(tmp_path, grpo_config(), {"1+1=": ["2", "xxxxxxxxx", "2", "3"], "2+2=": ["4"]})
    assert batch["sample_mask"].tolist() == [1.0] * 8


def test_prompts_of_max_input_seq_length_tokens_are_generated_but_get_no_loss(tmp_path):
    """data.max_input_seq_length=5: the 5-token prompt "10+1=" is rolled out and scored (loss_multiplier 0 at
    ≥ 5 tokens, as upstream), the 4-token one trains."""
    cfg = grpo_config("data.max_input_seq_length=5")
    train = [("1+1=", "2"), ("10+1=", "11")]
    _, batch, h = run_step(tmp_path, cfg, {"1+1=": ["2", "3"], "10+1=": ["11", "2"]}, train=train)
    assert h.generator.calls[0].prompts[4:] == ["10+1="] * 4
    assert batch["sample_mask"].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert batch["rewards"].tolist() == [1, 0, 1, 0, 1, 0, 1, 0]


def test_only_generated_tokens_reach_the_loss(tmp_path):
    """The fake policy reports a log-prob at every position (prompt and padding too): d loss / d lp is
    -A_i / N_tok on each generated token (ratio ≡ 1, IS weight 1) and exactly 0 elsewhere.
    N_tok = 7 rows × 2 tokens + "xx"+EOS = 17; loss = -Σ_i A_i·n_i / 17."""
    _, batch, h = run_step(tmp_path, grpo_config())
    step = h.policy.trained[-1].steps[0]
    adv = torch.tensor([2 / 3, -2 / 3, 2 / 3, -2 / 3, 1 / 3, 1 / 3, 1 / 3]) / (S3 + EPS)
    adv = torch.cat([adv, torch.tensor([-1.0])])  # [1,1,1,0]: the 0's peers are all 1 (std 0, raw 0 - 1)
    tokens = torch.tensor([2.0] * 7 + [3.0])
    assert_close(step.loss, float(-(adv * tokens).sum() / 17), rtol=0, atol=1e-6)
    generated = batch["token_mask"].bool()
    expected_grad = torch.where(generated, (-adv / 17).unsqueeze(-1).expand_as(generated), torch.zeros(()))
    assert_close(step.logprob_grad, expected_grad, rtol=0, atol=1e-7)


def test_seq_logprob_error_masks_rows_whose_sampler_disagrees(tmp_path):
    """Row 0's sampler log-probs are 1.0 above the trainer's on each token: error e^1 > 1.5, masked (the others
    agree exactly: 1.0). It still counts in its group's baseline. Needs prev log-probs even with
    force_on_policy_ratio."""
    cfg = grpo_config("grpo.seq_logprob_error_threshold=1.5")
    script = {"1+1=": [Reply("2", lp_shift=1.0), "3", "2", "3"], "2+2=": MIXED["2+2="]}
    metrics, batch, h = run_step(tmp_path, cfg, script)
    assert h.policy.logprob_calls == [True]
    assert batch["sample_mask"].tolist() == [0, 1, 1, 1, 1, 1, 1, 1]
    assert metrics["train/num_masked_seqs_by_logprob_error"] == 1
    assert metrics["train/masked_correct_pct"] == 100.0
    assert metrics["train/max_seq_mult_prob_error"] == pytest.approx(math.e)
    assert metrics["train/max_seq_mult_prob_error_after_mask"] == pytest.approx(1.0)
    assert row_values(batch)[2] == pytest.approx(2 / 3 / (S3 + EPS))  # row 0's reward is still a peer


@pytest.mark.parametrize("on_policy", [True, False])
def test_force_on_policy_ratio_skips_the_previous_log_prob_pass(tmp_path, on_policy):
    """force_on_policy_ratio: no prev pass (zeros in the batch; the loss uses sg(lp)); otherwise one filtered pass."""
    _, batch, h = run_step(tmp_path, grpo_config(f"loss_fn.force_on_policy_ratio={on_policy}"))
    if on_policy:
        assert h.policy.logprob_calls == [] and not batch["prev_logprobs"].any()
    else:
        assert h.policy.logprob_calls == [True]
        assert_close(batch["prev_logprobs"], token_logprob(batch["input_ids"]))


def test_reference_log_probs_only_with_a_kl_weight(tmp_path):
    """reference_policy_kl_penalty > 0: one unfiltered reference pass (the fake reference reports 2× the policy's
    log-probs); 0: no reference exists and the batch holds zeros."""
    _, batch, h = run_step(tmp_path / "kl", grpo_config("loss_fn.reference_policy_kl_penalty=0.05"))
    assert h.reference.logprob_calls == [False]
    assert_close(batch["reference_policy_logprobs"], 2 * token_logprob(batch["input_ids"]))
    _, batch, h = run_step(tmp_path / "no_kl", grpo_config("grpo.skip_reference_policy_logprobs_calculation=true"))
    assert h.reference is None and not batch["reference_policy_logprobs"].any()


def test_skipping_the_reference_pass_with_a_kl_weight_is_refused():
    with pytest.raises(ConfigError, match="skip_reference_policy_logprobs_calculation"):
        grpo_config("grpo.skip_reference_policy_logprobs_calculation=true", "loss_fn.reference_policy_kl_penalty=0.1")


def test_k_optimizer_steps_per_grpo_step(tmp_path):
    """train_global_batch_size=4 < P·G=8: the whole rollout goes to train once, which takes K = 2 optimizer steps
    (rows 0-3, then 4-7) and one scheduler step."""
    cfg = grpo_config("loss_fn.force_on_policy_ratio=false", "policy.train_global_batch_size=4")
    metrics, batch, h = run_step(tmp_path, cfg)
    call = h.policy.trained[-1]
    assert batch["input_ids"].shape[0] == 8 and (call.global_batch_size, call.micro_batch_size) == (4, 4)
    assert [s.rows for s in call.steps] == [range(0, 4), range(4, 8)]
    assert h.policy.scheduler_steps == 1 and metrics["train/num_optimizer_steps"] == 2


def test_k_optimizer_steps_with_the_real_hf_policy(tmp_path):
    """The same split with the real HF policy (a 2-layer Llama over the character vocabulary) in the fake's
    place: each GRPO step takes 2 AdamW steps and one scheduler step, and changes the weights."""
    cfg = grpo_config(
        "loss_fn.force_on_policy_ratio=false",
        "policy.train_global_batch_size=4",
        "policy.train_micro_batch_size=2",
    )
    policy = HFPolicy.from_config(cfg["policy"], model=build_model())
    script = {**MIXED, "3+3=": ["6", "x"], "4+4=": ["8", "x"]}
    h = build_controller(tmp_path, cfg, script, policy=policy)
    for step in (1, 2):
        before = policy.model.lm_head.weight.detach().clone()
        metrics = h.controller.train_step(step)
        assert metrics["train/num_optimizer_steps"] == 2 and policy.scheduler.last_epoch == step
        assert {int(state["step"]) for state in policy.optimizer.state.values()} == {2 * step}
        assert not torch.equal(before, policy.model.lm_head.weight)


def whiten(values: torch.Tensor) -> torch.Tensor:
    """(x - mean) / sqrt(population variance), reinforce_plus_plus's batch whitening."""
    return (values - values.mean()) / values.var(unbiased=False).sqrt()


def test_kl_in_reward_uses_the_previous_policy_log_probs(tmp_path):
    """reinforce_plus_plus with use_kl_in_reward, β = 0.1, one group ["2", "3"] -> A = ±0.5 per row, minus
    β·k3(lp_ref - lp_prev) per token (k3(x) = e^x - 1 - x; lp_ref = 2·lp_prev, so x = lp_prev: -0.3 for "2",
    -0.4 for "3", -0.2 for EOS), whitened over the 4 tokens. prev log-probs are computed although
    force_on_policy_ratio is on: the KL must not be taken against zeros."""
    cfg = grpo_config(
        "grpo.adv_estimator.name=reinforce_plus_plus",
        "loss_fn.use_kl_in_reward=true",
        "loss_fn.reference_policy_kl_penalty=0.1",
        "grpo.num_prompts_per_step=1",
        "grpo.num_generations_per_prompt=2",
        "policy.train_global_batch_size=2",
        "policy.train_micro_batch_size=2",
    )
    _, batch, h = run_step(tmp_path, cfg, {"1+1=": ["2", "3"]})

    def k3(x: float) -> float:
        return math.exp(x) - 1 - x

    tokens = torch.tensor([0.5 - 0.1 * k3(-0.3), 0.5 - 0.1 * k3(-0.2), -0.5 - 0.1 * k3(-0.4), -0.5 - 0.1 * k3(-0.2)])
    assert h.policy.logprob_calls == [True]
    assert_close(batch["advantages"][batch["token_mask"].bool()], whiten(tokens), rtol=0, atol=1e-5)


def test_reinforce_plus_plus_whitens_over_the_tokens_that_train(tmp_path):
    """Whitening uses token_mask · sample_mask: group ["2", "3", 9 characters (truncated, filtered)] has
    A = r - 1/3 = [2/3, -1/3, -1/3]; over the 2 + 2 kept tokens [2/3, 2/3, -1/3, -1/3] whiten to [1, 1, -1, -1]."""
    cfg = grpo_config(
        "grpo.adv_estimator.name=reinforce_plus_plus",
        "grpo.overlong_filtering=true",
        "grpo.num_prompts_per_step=1",
        "grpo.num_generations_per_prompt=3",
        "policy.train_global_batch_size=3",
        "policy.train_micro_batch_size=1",
    )
    _, batch, _ = run_step(tmp_path, cfg, {"1+1=": ["2", "3", "xxxxxxxxx"]})
    kept = batch["token_mask"].bool() & batch["sample_mask"].bool().unsqueeze(-1)
    assert_close(batch["advantages"][kept], torch.tensor([1.0, 1.0, -1.0, -1.0]), rtol=0, atol=1e-5)


def test_flagged_samples_leave_the_loss_with_the_switch(tmp_path):
    """env.should_mask_flagged_samples: a reply the reward server flags (here: containing "d") gets sample_mask 0
    and is counted; without the switch it is only counted."""
    script = {"1+1=": ["2", "d", "2", "3"], "2+2=": ["4"]}
    cfg = grpo_config("env.should_mask_flagged_samples=true")
    metrics, batch, _ = run_step(tmp_path / "on", cfg, script, flag_marker="d")
    assert batch["sample_mask"].tolist() == [1, 0, 1, 1, 1, 1, 1, 1]
    assert metrics["train/flagged_samples"] == 1 and metrics["train/masked_flagged_samples"] == 1
    metrics, batch, _ = run_step(tmp_path / "off", grpo_config(), script, flag_marker="d")
    assert batch["sample_mask"].tolist() == [1.0] * 8 and metrics["train/flagged_samples"] == 1
