"""ClippedPGLoss: hand-computed values and gradients for every variant, masks, micro-batch invariance, config."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from rlvr.errors import ConfigError
from rlvr.grpo.loss import ClippedPGLoss, compute_kl, masked_mean
from rlvr.policy.train_metrics import Fold, fold

F64 = torch.float64
LN2, LN3 = math.log(2.0), math.log(3.0)

# β = 0 unless a test is about the KL, so that the actor term can be checked alone.
NO_KL = {"reference_policy_kl_penalty": 0.0}


def _data(lp_shape, **over):
    """A batch with every [B, S] field zero, all tokens and samples valid; ``over`` replaces fields."""
    b, s = lp_shape
    data = {
        "prev_logprobs": torch.zeros(b, s, dtype=F64),
        "generation_logprobs": torch.zeros(b, s, dtype=F64),
        "reference_policy_logprobs": torch.zeros(b, s, dtype=F64),
        "advantages": torch.zeros(b, s, dtype=F64),
        "token_mask": torch.ones(b, s, dtype=F64),
        "sample_mask": torch.ones(b, dtype=F64),
    }
    data.update({k: torch.as_tensor(v, dtype=F64) for k, v in over.items()})
    return data


def _run(cfg, lp_values, n_seqs=None, n_toks=None, **data_over):
    """Loss, d loss / d lp and metrics for current log-probs ``lp_values``."""
    lp = torch.tensor(lp_values, dtype=F64, requires_grad=True)
    data = _data(lp.shape, **data_over)
    mask = data["token_mask"] * data["sample_mask"][:, None]
    n_toks = mask.sum() if n_toks is None else n_toks
    n_seqs = data["sample_mask"].sum() if n_seqs is None else n_seqs
    loss, metrics = ClippedPGLoss(cfg)(lp, data, n_seqs, n_toks)
    loss.backward()
    return loss.detach(), lp.grad, metrics


def test_masked_mean_definition():
    """masked_mean = Σ x·mask / (denom + 1e-8), denom defaulting to Σ mask."""
    x, m = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([1.0, 0.0, 1.0])
    assert_close(masked_mean(x, m), torch.tensor(5.0 / (2 + 1e-8)))
    assert_close(masked_mean(x, m, 10.0), torch.tensor(0.5))


def test_ppo_clip_both_signs_both_sides():
    """ε=0.2: A>0 clips r=1.5 to 1.2 (no grad) but not r=0.5; A<0 clips r=0.5 to 0.8 but not r=1.5."""
    r = [1.5, 0.5, 1.1, 0.9]
    lp = [[math.log(x) for x in r]] * 2
    adv = [[1.0] * 4, [-1.0] * 4]
    loss, grad, m = _run(NO_KL, lp, advantages=adv)
    # Row A=+1: ℓ = max(-r, -r̄) = [-1.2, -0.5, -1.1, -0.9]; grad -r where unclipped: [0, -.5, -1.1, -.9].
    # Row A=-1: ℓ = max(r, r̄) = [1.5, 0.8, 1.1, 0.9]; grad +r where unclipped: [1.5, 0, 1.1, .9].
    # N_tok = 8: loss = (-3.7 + 4.3)/8 = 0.075.
    assert_close(loss, torch.tensor(0.6 / 8, dtype=F64))
    assert_close(grad, torch.tensor([[0, -0.5, -1.1, -0.9], [1.5, 0, 1.1, 0.9]], dtype=F64) / 8)
    assert m["probs_ratio_min"] == pytest.approx(0.5) and m["probs_ratio_max"] == pytest.approx(1.5)
    assert m["probs_ratio_clamped_min"] == pytest.approx(0.8) and m["probs_ratio_clamped_max"] == pytest.approx(1.2)
    assert m["probs_ratio"] == pytest.approx(sum(r) * 2 / 8)
    assert m["probs_ratio_clamped"] == pytest.approx((1.2 + 0.8 + 1.1 + 0.9) * 2 / 8)


def test_asymmetric_clip_higher():
    """ratio_clip_max = 0.28 (DAPO clip-higher): r = 1.25 with A>0 is inside [0.8, 1.28], so ℓ = -1.25 with grad."""
    loss, grad, _ = _run({**NO_KL, "ratio_clip_max": 0.28}, [[math.log(1.25)]], advantages=[[1.0]])
    assert_close(loss, torch.tensor(-1.25, dtype=F64))
    assert_close(grad, torch.tensor([[-1.25]], dtype=F64))


def test_dual_clip_caps_negative_advantage_loss():
    """ratio_clip_c = 3: with A=-1, r=5 gives min(max(5, 1.2), 3) = 3 (no grad); r=2 stays 2; A>0 untouched."""
    lp = [[math.log(5.0), math.log(2.0), math.log(5.0)]]
    loss, grad, _ = _run({**NO_KL, "ratio_clip_c": 3.0}, lp, advantages=[[-1.0, -1.0, 1.0]])
    # ℓ = [3, 2, -1.2] → mean 3.8/3; grads: [0, r=2, 0 (clipped at 1.2)] / 3.
    assert_close(loss, torch.tensor(3.8 / 3, dtype=F64))
    assert_close(grad, torch.tensor([[0.0, 2.0, 0.0]], dtype=F64) / 3)


def test_force_on_policy_ratio_is_plain_policy_gradient():
    """force_on_policy_ratio: prev_logprobs are ignored, loss = -mean(A), gradient = -A/N at valid tokens."""
    adv = [[1.0, 2.0, 0.5], [-1.0, -3.0, 4.0]]
    lp = [[-0.3, -2.0, -0.1], [-1.5, -0.2, -0.7]]
    cfg = {**NO_KL, "force_on_policy_ratio": True}
    loss, grad, m = _run(cfg, lp, advantages=adv, prev_logprobs=[[50.0] * 3] * 2, token_mask=[[1, 1, 0], [1, 1, 1]])
    # Valid tokens: 1, 2, -1, -3, 4 → N = 5, loss = -(1+2-1-3+4)/5 = -0.6.
    assert_close(loss, torch.tensor(-0.6, dtype=F64))
    assert_close(grad, -torch.tensor([[1.0, 2.0, 0.0], [-1.0, -3.0, 4.0]], dtype=F64) / 5)
    assert m["probs_ratio"] == pytest.approx(1.0)


def test_force_on_policy_ratio_on_a_later_mini_batch_is_corrected_by_the_truncated_is_weight():
    """Nemotron's default.yaml: force_on_policy_ratio with 3 optimizer steps per GRPO step. On mini-batch 2 the
    policy has moved (lp != lp_gen); the ratio stays 1, and the importance weight w = min(exp(lp - lp_gen), 5)
    (detached) carries the drift: ℓ_t = -A·w·r with r = exp(lp - sg(lp))."""
    cfg = {
        **NO_KL,
        "force_on_policy_ratio": True,
        "use_importance_sampling_correction": True,
        "truncated_importance_sampling_ratio": 5.0,
        "truncated_importance_sampling_type": "tis",
    }
    lp = [[math.log(0.5), math.log(0.9)]]
    gen = [[math.log(0.25), math.log(0.1)]]  # w = [2, 9 -> truncated to 5]
    loss, grad, m = _run(cfg, lp, advantages=[[1.0, -1.0]], generation_logprobs=gen, prev_logprobs=[[0.0, 0.0]])
    # ℓ = [-1·2, +1·5] → mean (−2 + 5)/2 = 1.5; dℓ/dlp = -A·w / N = [-1, 2.5].
    assert_close(loss, torch.tensor(1.5, dtype=F64))
    assert_close(grad, torch.tensor([[-1.0, 2.5]], dtype=F64))
    assert m["probs_ratio"] == pytest.approx(1.0)


def test_disable_ppo_ratio_is_reinforce():
    """disable_ppo_ratio: ℓ = -A·lp, so loss = -mean(A·lp) and gradient = -A/N."""
    loss, grad, _ = _run({**NO_KL, "disable_ppo_ratio": True}, [[-0.5, -2.0]], advantages=[[2.0, -1.0]])
    # -(2·-0.5 + -1·-2)/2 = -(−1 + 2)/2 = -0.5
    assert_close(loss, torch.tensor(-0.5, dtype=F64))
    assert_close(grad, torch.tensor([[-1.0, 0.5]], dtype=F64))


def test_cispo_uses_stopped_clipped_ratio_times_logprob():
    """use_cispo: ℓ = -A·sg(r̄)·lp; r = 1.5 → r̄ = 1.2; value -1.2·ln1.5, gradient -1.2 (no ratio gradient)."""
    lp = math.log(1.5)
    loss, grad, _ = _run({**NO_KL, "use_cispo": True}, [[lp]], advantages=[[1.0]])
    assert_close(loss, torch.tensor(-1.2 * lp, dtype=F64))
    assert_close(grad, torch.tensor([[-1.2]], dtype=F64))


def test_token_versus_sequence_averaging():
    """Row 0 has 3 tokens with ℓ=-1, row 1 one token with ℓ=+2: token mean -1/4, sequence mean (−1+2)/2."""
    adv = [[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]]
    mask = [[1, 1, 1], [1, 0, 0]]
    base = {**NO_KL, "force_on_policy_ratio": True}
    token_loss, token_grad, _ = _run(base, [[0.0] * 3] * 2, advantages=adv, token_mask=mask)
    seq_loss, seq_grad, _ = _run({**base, "token_level_loss": False}, [[0.0] * 3] * 2, advantages=adv, token_mask=mask)
    assert_close(token_loss, torch.tensor(-0.25, dtype=F64))
    assert_close(seq_loss, torch.tensor(0.5, dtype=F64))
    # Sequence level: d/dlp = -A / (tokens in row · N_seq) → row 0: -1/(3·2), row 1: 2/(1·2).
    assert_close(seq_grad, torch.tensor([[-1 / 6, -1 / 6, -1 / 6], [1.0, 0, 0]], dtype=F64))
    assert_close(token_grad, torch.tensor([[-0.25, -0.25, -0.25], [0.5, 0, 0]], dtype=F64))


# logr = ln(ref/π) = ln(0.25/0.5) = -ln2.  k1 = ln2, k2 = ln2²/2, k3 = 0.5 - 1 + ln2.
# dk/dlp (lp = π's log-prob): k1 → 1, k2 → -logr = ln2, k3 → 1 - e^logr = 0.5.
# Default weight ω = exp(lp - sg(lp)) adds k·∇lp, so grad = β·(k + dk/dlp).
@pytest.mark.parametrize(
    ("kl_type", "k", "dk"),
    [("k1", LN2, 1.0), ("k2", LN2**2 / 2, LN2), ("k3", 0.5 - 1 + LN2, 0.5)],
)
def test_kl_types_values_and_score_function_gradient(kl_type, k, dk):
    """Each KL type has its hand value; the HEAD weight exp(lp - sg(lp)) adds the score-function term k·∇lp."""
    cfg = {"reference_policy_kl_penalty": 0.1, "reference_policy_kl_type": kl_type}
    loss, grad, m = _run(cfg, [[math.log(0.5)]], reference_policy_logprobs=[[math.log(0.25)]])
    assert_close(loss, torch.tensor(0.1 * k, dtype=F64))
    assert_close(grad, torch.tensor([[0.1 * (k + dk)]], dtype=F64))
    assert m["kl_penalty"] == pytest.approx(k)


def test_on_policy_kl_approximation_weight():
    """use_on_policy_kl_approximation: ω = exp(lp - lp_gen) = 2 (with gradient): value 2β·k3, grad 2β(k3 + 0.5)."""
    k3 = 0.5 - 1 + LN2
    cfg = {"reference_policy_kl_penalty": 0.1, "use_on_policy_kl_approximation": True}
    loss, grad, _ = _run(
        cfg,
        [[math.log(0.5)]],
        reference_policy_logprobs=[[math.log(0.25)]],
        generation_logprobs=[[math.log(0.25)]],
        prev_logprobs=[[math.log(0.5)]],
    )
    assert_close(loss, torch.tensor(0.2 * k3, dtype=F64))
    assert_close(grad, torch.tensor([[0.2 * (k3 + 0.5)]], dtype=F64))


def test_kl_clamps_freeze_the_gradient():
    """logr = -30: input clamp 20 makes k3 = e^-20 + 19 with zero gradient; output clamp 10 then caps it at 10."""
    lp, ref = [[0.0]], [[-30.0]]
    k3 = math.exp(-20) - 1 + 20
    loss, grad, _ = _run(
        {"kl_output_clamp_value": None, "reference_policy_kl_penalty": 1.0}, lp, reference_policy_logprobs=ref
    )
    assert_close(loss, torch.tensor(k3, dtype=F64))
    assert_close(grad, torch.zeros(1, 1, dtype=F64))
    loss, grad, _ = _run({"reference_policy_kl_penalty": 1.0}, lp, reference_policy_logprobs=ref)
    assert_close(loss, torch.tensor(10.0, dtype=F64))
    assert_close(grad, torch.zeros(1, 1, dtype=F64))


def test_kl_in_reward_removes_loss_kl():
    """use_kl_in_reward: the KL lives in the reward (Reinforce++), so the loss carries none even with β > 0."""
    loss, _, m = _run(
        {"use_kl_in_reward": True, "reference_policy_kl_penalty": 0.5},
        [[math.log(0.5)]],
        reference_policy_logprobs=[[math.log(0.25)]],
    )
    assert loss.item() == 0.0 and m["kl_penalty"] == 0.0


def test_compute_kl_directions():
    """compute_kl(lp, ref) uses logr = ref - lp: k1(lp=ln .5, ref=ln .25) = ln2, k2 of the reverse = ln2²/2."""
    a, b = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert_close(compute_kl(a, b, kl_type="k1"), torch.tensor([LN2]))
    assert_close(compute_kl(b, a, kl_type="k2"), torch.tensor([LN2**2 / 2]))


# IS weights w = exp(lp_old - lp_gen) with lp_old = 0: w = [4, 0.25, 1, 8] on one row; r = 1 and A = 1 ⇒ ℓ = -1.
W = [4.0, 0.25, 1.0, 8.0]
GEN = [[-math.log(w) for w in W]]
IS = {**NO_KL, "use_importance_sampling_correction": True}


@pytest.mark.parametrize(
    ("extra", "kept", "oob"),
    [
        ({}, [4.0, 0.25, 1.0, 8.0], None),
        (
            {"truncated_importance_sampling_type": "tis", "truncated_importance_sampling_ratio": 5.0},
            [4.0, 0.25, 1.0, 5.0],
            1 / 4,
        ),  # clamp to [0, 5]
        (
            {
                "truncated_importance_sampling_type": "icepop",
                "truncated_importance_sampling_ratio": 5.0,
                "truncated_importance_sampling_ratio_min": 0.5,
            },
            [4.0, 0.0, 1.0, 0.0],
            2 / 4,
        ),  # zero outside [.5, 5]
    ],
)
def test_token_importance_weights_and_truncation(extra, kept, oob):
    """Loss = -Σ w / N with the (truncated) IS weights; is_oob_ratio is the fraction of tokens outside bounds."""
    loss, grad, m = _run({**IS, **extra}, [[0.0] * 4], advantages=[[1.0] * 4], generation_logprobs=GEN)
    assert_close(loss, torch.tensor(-sum(kept) / 4, dtype=F64))
    assert_close(grad, -torch.tensor([kept], dtype=F64) / 4)
    assert m["sampling_importance_ratio"] == pytest.approx(sum(kept) / 4)
    assert m.get("is_oob_ratio") == (None if oob is None else pytest.approx(oob))


def test_importance_weights_off_means_unit_weights():
    """Without use_importance_sampling_correction the weights are 1, but their mean is still reported."""
    loss, _, m = _run(NO_KL, [[0.0] * 4], advantages=[[1.0] * 4], generation_logprobs=GEN)
    assert_close(loss, torch.tensor(-1.0, dtype=F64))
    assert m["sampling_importance_ratio"] == pytest.approx(sum(W) / 4)


def test_seq_mask_tis_gates_rows_by_geometric_mean():
    """seq-mask-tis [0.5, 2]: row 0 (ln2, -ln2) has geo mean 1, keeps raw weights (2, .5); row 1 (geo 4) gets 0."""
    cfg = {
        **IS,
        "truncated_importance_sampling_type": "seq-mask-tis",
        "truncated_importance_sampling_ratio": 2.0,
        "truncated_importance_sampling_ratio_min": 0.5,
    }
    gen = [[-LN2, LN2], [-math.log(4.0), -math.log(4.0)]]
    loss, grad, m = _run(cfg, [[0.0, 0.0]] * 2, advantages=[[1.0, 1.0]] * 2, generation_logprobs=gen)
    assert_close(loss, torch.tensor(-(2.0 + 0.5) / 4, dtype=F64))
    assert_close(grad, -torch.tensor([[2.0, 0.5], [0.0, 0.0]], dtype=F64) / 4)
    assert m["is_oob_ratio"] == pytest.approx(1 / 2)  # one of two sequences


def test_gspo_sequence_ratio_and_sequence_weight():
    """GSPO: r_i = exp(mean_t(lp - lp_old)) = √2 for log-ratios (ln2, 0); IS weight exp(Σ(lp_old - lp_gen)) = 6."""
    cfg = {**NO_KL, "sequence_level_importance_ratios": True, "token_level_loss": False}
    lp = [[LN2, 0.0]]
    loss, grad, _ = _run(cfg, lp, advantages=[[-1.0, -1.0]])
    # A = -1: ℓ_t = max(r, 1.2) = √2 on both tokens; loss = (ℓ_0 + ℓ_1)/2 (sequence mean, N_seq = 1).
    # Every ℓ_t depends on every lp_u through r: dr/dlp_u = r/2, so dloss/dlp_u = (r/2 + r/2)/2 = √2/2.
    s2 = math.sqrt(2.0)
    assert_close(loss, torch.tensor(s2, dtype=F64))
    assert_close(grad, torch.tensor([[s2 / 2, s2 / 2]], dtype=F64))
    # With IS correction the sequence weight uses the SUM of log-ratios: ln2 + ln3 → w = 6.
    loss_is, _, m = _run(
        {**cfg, "use_importance_sampling_correction": True},
        lp,
        advantages=[[-1.0, -1.0]],
        generation_logprobs=[[-LN2, -LN3]],
    )
    assert_close(loss_is, torch.tensor(6 * s2, dtype=F64))
    assert m["sampling_importance_ratio"] == pytest.approx(6.0)


def test_masked_tokens_and_rows_contribute_nothing():
    """Adding a sample_mask=0 row and token_mask=0 positions with wild values changes neither loss nor gradients."""
    cfg = {"reference_policy_kl_penalty": 0.05, "use_importance_sampling_correction": True}
    lp_clean = [[-0.2, -1.0]]
    base_loss, base_grad, _ = _run(
        cfg, lp_clean, advantages=[[1.0, 1.0]], prev_logprobs=[[-0.3, -0.9]], n_seqs=1.0, n_toks=2.0
    )
    lp = [[-0.2, -1.0, -7.0], [-3.0, -4.0, -5.0]]
    loss, grad, m = _run(
        cfg,
        lp,
        n_seqs=1.0,
        n_toks=2.0,
        advantages=[[1.0, 1.0, 100.0], [50.0, -50.0, 9.0]],
        prev_logprobs=[[-0.3, -0.9, 3.0], [2.0, -9.0, 1.0]],
        generation_logprobs=[[0.0, 0.0, -20.0], [-10.0, 5.0, -3.0]],
        reference_policy_logprobs=[[0.0, 0.0, 10.0], [-12.0, 4.0, 0.0]],
        token_mask=[[1, 1, 0], [1, 1, 1]],
        sample_mask=[1, 0],
    )
    assert_close(loss, base_loss)
    assert_close(grad[0, :2], base_grad[0])
    assert torch.all(grad[0, 2] == 0) and torch.all(grad[1] == 0)
    assert m["num_valid_samples"] == 1.0


@pytest.mark.parametrize(
    "cfg",
    [
        {
            "use_importance_sampling_correction": True,
            "truncated_importance_sampling_type": "tis",
            "truncated_importance_sampling_ratio": 2.0,
            "ratio_clip_c": 3.0,
        },
        {"token_level_loss": False, "use_on_policy_kl_approximation": True, "reference_policy_kl_type": "k2"},
        {
            "sequence_level_importance_ratios": True,
            "token_level_loss": False,
            "use_importance_sampling_correction": True,
            "positive_example_nll_weight": 0.3,
        },
        {"force_on_policy_ratio": True, "reference_policy_kl_type": "k1"},
    ],
)
def test_microbatch_split_does_not_change_gradient_or_metrics(cfg):
    """Summing micro-batch losses normalised by global counts gives the same gradient for splits into 1, 2, 4."""
    gen = torch.Generator().manual_seed(0)
    b, s = 8, 5
    lp = -torch.rand(b, s, generator=gen, dtype=F64) * 2
    data = {
        "prev_logprobs": lp + 0.3 * torch.randn(b, s, generator=gen, dtype=F64),
        "generation_logprobs": lp + 0.3 * torch.randn(b, s, generator=gen, dtype=F64),
        "reference_policy_logprobs": lp + 0.5 * torch.randn(b, s, generator=gen, dtype=F64),
        "advantages": torch.randn(b, 1, generator=gen, dtype=F64).expand(b, s).clone(),
        "token_mask": (torch.rand(b, s, generator=gen) > 0.3).to(F64),
        "sample_mask": torch.tensor([1, 1, 0, 1, 1, 1, 0, 1], dtype=F64),
        "rewards": torch.tensor([1, 0, 1, 1, 0, 0, 1, 0], dtype=F64),
    }
    n_seqs = data["sample_mask"].sum()
    n_toks = (data["token_mask"] * data["sample_mask"][:, None]).sum()
    fn = ClippedPGLoss(cfg)
    results = []
    for parts in (1, 2, 4):
        leaf = lp.clone().requires_grad_(True)
        metrics = []
        total = torch.zeros((), dtype=F64)
        for idx in torch.arange(b).chunk(parts):
            loss, m = fn(leaf[idx], {k: v[idx] for k, v in data.items()}, n_seqs, n_toks)
            total = total + loss
            metrics.append(m)
        total.backward()
        results.append((total.detach(), leaf.grad.clone(), fold(metrics, Fold.MICRO_BATCHES)))
    for total, grad, metrics in results[1:]:
        assert_close(total, results[0][0])
        assert_close(grad, results[0][1])
        for key in (
            "loss",
            "probs_ratio",
            "probs_ratio_min",
            "probs_ratio_max",
            "token_mult_prob_error",
            "kl_penalty",
            "num_valid_samples",
            "sampling_importance_ratio",
            "approx_entropy",
        ):
            assert metrics[key] == pytest.approx(results[0][2][key], rel=1e-9, abs=1e-12), key
    assert results[0][2]["loss"] == pytest.approx(results[0][0].item())
    assert results[0][2]["num_valid_samples"] == 6.0


def test_mismatch_metrics_by_hand():
    """lp_old = 0 (p=1), lp_gen = ln .5, lp = ln .8: error e^{ln2} = 2, k3 KLs, JSD to the mixture, entropy."""
    _, _, m = _run(NO_KL, [[math.log(0.8)]], generation_logprobs=[[math.log(0.5)]])
    assert m["token_mult_prob_error"] == pytest.approx(2.0)
    assert m["gen_kl_error"] == pytest.approx(2 - 1 - LN2)  # logr = lp_old - lp_gen = ln2 → e^ln2 - 1 - ln2
    assert m["policy_kl_error"] == pytest.approx(0.5 - 1 + LN2)  # logr = -ln2
    # Mixture m = 0.75: ½[(1/.75) - 1 - ln(4/3)] + ½[(.5/.75) - 1 - ln(2/3)].
    jsd = 0.5 * (4 / 3 - 1 - math.log(4 / 3)) + 0.5 * (2 / 3 - 1 - math.log(2 / 3))
    assert m["js_divergence_error"] == pytest.approx(jsd)
    assert m["approx_entropy"] == pytest.approx(-(0.8 / 0.5) * math.log(0.8))


def test_positive_example_nll():
    """μ=0.5 adds μ·Σ_{rows with reward>0}(-lp)/N_tok; without data['rewards'] it is an error, not a no-op."""
    cfg = {**NO_KL, "positive_example_nll_weight": 0.5, "force_on_policy_ratio": True}
    lp = [[-1.0, -2.0], [-3.0, -4.0]]
    loss, grad, m = _run(cfg, lp, rewards=[1.0, 0.0])
    assert_close(loss, torch.tensor(0.5 * 3.0 / 4, dtype=F64))
    assert_close(grad, torch.tensor([[-0.125, -0.125], [0.0, 0.0]], dtype=F64))
    assert m["positive_nll_loss"] == pytest.approx(3.0 / 4)
    with pytest.raises(ConfigError, match="positive_example_nll_weight"):
        _run(cfg, lp)


def test_metric_aggregation_rules():
    """Over micro-batches the loss's metrics sum, and *_min/*_max keys take min/max (rlvr.policy.train_metrics)."""
    first = {"loss": 1.0, "a_min": 2.0, "a_max": 2.0}
    out = fold([first, {"loss": 0.5, "a_min": 1.0, "a_max": 3.0}], Fold.MICRO_BATCHES)
    assert out == {"loss": 1.5, "a_min": 1.0, "a_max": 3.0}


def test_defaults_are_upstream():
    """An empty loss_fn block gives upstream's code defaults."""
    c = ClippedPGLoss({}).config
    assert (c.reference_policy_kl_penalty, c.reference_policy_kl_type) == (0.01, "k3")
    assert (c.kl_input_clamp_value, c.kl_output_clamp_value) == (20.0, 10.0)
    assert (c.ratio_clip_min, c.ratio_clip_max, c.ratio_clip_c) == (0.2, 0.2, None)
    assert c.token_level_loss and not c.force_on_policy_ratio and c.positive_example_nll_weight == 0.0


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        ({"ratio_clip_maximum": 0.2}, "did you mean 'ratio_clip_max'"),  # typo → suggestion
        ({"ratio_clip_c": 1.0}, "ratio_clip_c"),
        ({"ratio_clip_min": "0.2"}, "ratio_clip_min"),
        ({"token_level_loss": "yes"}, "token_level_loss"),
        ({"reference_policy_kl_type": "k4"}, "reference_policy_kl_type"),
        ({"kl_input_clamp_value": 0.0}, "kl_input_clamp_value"),
        ({"sequence_level_importance_ratios": True}, "sequence_level_importance_ratios"),
        ({"use_cispo": True, "ratio_clip_c": 3.0}, "use_cispo"),
        ({"use_cispo": True, "token_level_loss": False}, "use_cispo"),
        ({"use_cispo": True, "force_on_policy_ratio": True}, "use_cispo"),
        ({"force_on_policy_ratio": True, "disable_ppo_ratio": True}, "force_on_policy_ratio"),
        (
            {"truncated_importance_sampling_type": "tis", "truncated_importance_sampling_ratio": 2.0},
            "truncated_importance_sampling_type",
        ),  # IS correction off
        (
            {
                "use_importance_sampling_correction": True,
                "truncated_importance_sampling_type": "clip",
                "truncated_importance_sampling_ratio": 2.0,
            },
            "truncated_importance_sampling_type",
        ),
        (
            {"use_importance_sampling_correction": True, "truncated_importance_sampling_type": "tis"},
            "truncated_importance_sampling_ratio",
        ),
        (
            {
                "use_importance_sampling_correction": True,
                "truncated_importance_sampling_type": "icepop",
                "truncated_importance_sampling_ratio": 2.0,
            },
            "truncated_importance_sampling_ratio_min",
        ),
        (
            {
                "use_importance_sampling_correction": True,
                "truncated_importance_sampling_type": "tis",
                "truncated_importance_sampling_ratio": 2.0,
                "truncated_importance_sampling_ratio_min": 3.0,
            },
            "truncated_importance_sampling_ratio_min",
        ),
        ({"truncated_importance_sampling_ratio": 2.0}, "truncated_importance_sampling_ratio"),
        (
            {
                "use_importance_sampling_correction": True,
                "truncated_importance_sampling_type": "seq-mask-tis",
                "truncated_importance_sampling_ratio": 2.0,
                "truncated_importance_sampling_ratio_min": 0.5,
                "sequence_level_importance_ratios": True,
                "token_level_loss": False,
            },
            "truncated_importance_sampling_type",
        ),
    ],
)
def test_config_errors_name_the_key(cfg, key):
    """Unknown keys, wrong types and invalid combinations raise ConfigError naming the offending key."""
    with pytest.raises(ConfigError, match=key):
        ClippedPGLoss(cfg)


def test_kl_reads_unfiltered_logprobs_when_given():
    """With top-k/p filtering the KL uses the unfiltered current log-probs (the reference pass is unfiltered)."""
    lp = torch.tensor([[math.log(0.9)]], dtype=F64, requires_grad=True)
    unfiltered = torch.tensor([[math.log(0.5)]], dtype=F64, requires_grad=True)
    data = _data((1, 1), reference_policy_logprobs=[[math.log(0.25)]])
    loss, _ = ClippedPGLoss({"reference_policy_kl_penalty": 0.1})(lp, data, 1.0, 1.0, unfiltered_logprobs=unfiltered)
    loss.backward()
    # Same numbers as the k3 case above: value β·(ln2 - 0.5), gradient β·(k3 + 0.5) on the unfiltered input only.
    k3 = 0.5 - 1 + LN2
    assert_close(loss.detach(), torch.tensor(0.1 * k3, dtype=F64))
    assert_close(unfiltered.grad, torch.tensor([[0.1 * (k3 + 0.5)]], dtype=F64))
    assert_close(lp.grad, torch.zeros(1, 1, dtype=F64))  # A = 0, so the actor term gives no gradient


def test_low_precision_logprobs_are_computed_in_float32():
    """bf16 log-probs are upcast: the loss is float32 and the gradient reaches the bf16 leaf."""
    lp = torch.tensor([[-0.5, -1.0]], dtype=torch.bfloat16, requires_grad=True)
    data = {k: v.float() for k, v in _data((1, 2), advantages=[[1.0, 1.0]], prev_logprobs=[[-0.5, -1.0]]).items()}
    loss, _ = ClippedPGLoss(NO_KL)(lp, data, 1.0, 2.0)
    loss.backward()
    assert loss.dtype == torch.float32 and lp.grad.dtype == torch.bfloat16
    assert_close(lp.grad.float(), torch.tensor([[-0.5, -0.5]]))
