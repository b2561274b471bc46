"""Group-relative advantages: hand-computed cases, exact triviality, and a brute-force reference."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from rlvr.errors import ConfigError
from rlvr.grpo import advantages
from rlvr.grpo.advantages import (
    GRPOAdvantageEstimator,
    ReinforcePlusPlusAdvantageEstimator,
    build_advantage_estimator,
    compute_advantages,
    get_advantage_estimator,
    group_baseline_and_std,
    register_advantage_estimator,
)

EPS = 1e-6


def _t(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


def _ids(values):
    return torch.tensor(values, dtype=torch.long)


def test_one_of_four_correct_without_loo():
    """Group [1,0,0,0], plain mean baseline: A = r - 0.25; std = sqrt(0.75/3) = 0.5 (Bessel)."""
    r, g = _t([1.0, 0, 0, 0]), _ids([7, 7, 7, 7])
    raw = compute_advantages(r, g, leave_one_out=False, normalize=False)
    assert_close(raw, _t([0.75, -0.25, -0.25, -0.25]))
    # Σ(r-0.25)^2 = 0.5625 + 3·0.0625 = 0.75; /(n-1)=0.25; std = 0.5.
    norm = compute_advantages(r, g, leave_one_out=False, normalize=True)
    assert_close(norm, _t([0.75, -0.25, -0.25, -0.25]) / (0.5 + EPS))


def test_one_of_four_correct_with_loo():
    """Group [1,0,0,0], LOO: row 0's peers are all 0 (std 0 ⇒ raw A = 1); rows 1-3 see peers {1,0,0}."""
    r, g = _t([1.0, 0, 0, 0]), _ids([0, 0, 0, 0])
    # Row 0: b = 0 → A = 1. Rows 1..3: b = 1/3 → A = -1/3.
    raw = compute_advantages(r, g, leave_one_out=True, normalize=False)
    assert_close(raw, _t([1.0, -1 / 3, -1 / 3, -1 / 3]))
    # Peers {1,0,0}: mean 1/3, Σdev² = 4/9 + 1/9 + 1/9 = 2/3, /(3-1) = 1/3, std = sqrt(1/3) ≈ 0.57735.
    norm = compute_advantages(r, g, leave_one_out=True, normalize=True)
    s = math.sqrt(1 / 3)
    assert_close(norm, _t([1.0, -1 / 3 / (s + EPS), -1 / 3 / (s + EPS), -1 / 3 / (s + EPS)]))
    baseline, std = group_baseline_and_std(r, g, leave_one_out=True)
    assert_close(baseline, _t([0.0, 1 / 3, 1 / 3, 1 / 3]))
    assert std[0].item() == 0.0
    assert_close(std[1:], _t([s, s, s]))


@pytest.mark.parametrize("loo", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_group_of_one_gets_zero(loo, normalize):
    """A prompt sampled once has nothing to compare against: its advantage is exactly 0."""
    r, g = _t([0.7, 1.0, 0.0]), _ids([3, 5, 5])
    adv = compute_advantages(r, g, leave_one_out=loo, normalize=normalize)
    assert adv[0].item() == 0.0


def test_group_of_two_with_and_without_loo():
    """[1,0]: LOO baseline is the other row, peers' std is 0 ⇒ raw ±1; without LOO: ±0.5/sqrt(0.5)."""
    r, g = _t([1.0, 0.0]), _ids([1, 1])
    assert_close(compute_advantages(r, g, leave_one_out=True, normalize=True), _t([1.0, -1.0]))
    # Mean 0.5, Σdev² = 0.5, /(2-1) → std = sqrt(0.5) ≈ 0.7071; A = ±0.5/0.7071 ≈ ±0.7071.
    s = math.sqrt(0.5)
    assert_close(compute_advantages(r, g, leave_one_out=False, normalize=True), _t([0.5, -0.5]) / (s + EPS))


def test_interleaved_group_ids_match_contiguous_layout():
    """Rows need not be contiguous: interleaving two groups gives each row the same value as contiguous rows."""
    r = _t([1.0, 0.2, 0.0, 0.4, 0.0, 0.6, 0.0, 0.8])
    g = _ids([10, 4, 10, 4, 10, 4, 10, 4])
    adv = compute_advantages(r, g, leave_one_out=True, normalize=True)
    perm = torch.tensor([0, 2, 4, 6, 1, 3, 5, 7])
    contiguous = compute_advantages(r[perm], g[perm], leave_one_out=True, normalize=True)
    assert_close(adv[perm], contiguous)
    # Group 4 = [0.2, 0.4, 0.6, 0.8]; row 0.2 has peers {0.4,0.6,0.8}: b = 0.6, std = 0.2 → A = -0.4/0.2 = -2.
    assert_close(adv[1], torch.tensor(-0.4 / (0.2 + EPS), dtype=torch.float64))
    # Group 10 = [1,0,0,0] from above: row 0 raw 1.0.
    assert adv[0].item() == 1.0


def test_non_dyadic_identical_peers_are_exactly_trivial():
    """[0, 0.95×7] in fp32 with LOO: row 0's peers are identical ⇒ std exactly 0 and A = -0.95, not ≈ -2075."""
    r = torch.tensor([0.0] + [0.95] * 7, dtype=torch.float32)
    g = torch.zeros(8, dtype=torch.long)
    # The hazard being avoided: E[r²] - E[r]² over the 7 identical peers in fp32 is ≈1.8e-7, not 0,
    # so the naive std is ≈4.6e-4 and the naive advantage ≈ -0.95/4.6e-4 ≈ -2075.
    peers = r[1:]
    naive_std = torch.sqrt(((peers * peers).mean() - peers.mean() ** 2) * 7 / 6)
    assert naive_std.item() > 1e-4
    _, std = group_baseline_and_std(r, g, leave_one_out=True)
    assert std[0].item() == 0.0
    adv = compute_advantages(r, g, leave_one_out=True, normalize=True)
    assert adv.dtype == torch.float32
    assert adv[0].item() == torch.tensor(-0.95, dtype=torch.float32).item()
    # Rows 1..7: peers {0, 0.95×6}: b = 5.7/7, Σdev² = 6·0.95²/7, std = sqrt(Σdev²/6) = 0.95/sqrt(7).
    expected = (0.95 - 5.7 / 7) / (0.95 / math.sqrt(7) + EPS)
    assert_close(adv[1:], torch.full((7,), expected, dtype=torch.float32))


@pytest.mark.parametrize("loo", [False, True])
def test_all_equal_non_dyadic_group_is_exactly_zero(loo):
    """An all-equal group (0.1 × 5, not representable exactly) gives A = 0 and std = 0 exactly, both modes."""
    r = torch.full((5,), 0.1, dtype=torch.float32)
    g = torch.zeros(5, dtype=torch.long)
    baseline, std = group_baseline_and_std(r, g, leave_one_out=loo)
    assert torch.equal(std, torch.zeros(5))
    assert torch.equal(baseline, r)
    assert torch.equal(compute_advantages(r, g, leave_one_out=loo), torch.zeros(5))


def test_clipping_happens_after_normalization():
    """Normalized [1.5, -0.5, -0.5, -0.5] (no LOO) clipped to [-0.4, 1.2] gives [1.2, -0.4, -0.4, -0.4]."""
    r, g = _t([1.0, 0, 0, 0]), _ids([0, 0, 0, 0])
    adv = compute_advantages(r, g, leave_one_out=False, normalize=True, clip_low=-0.4, clip_high=1.2)
    assert_close(adv, _t([1.2, -0.4, -0.4, -0.4]))
    only_high = compute_advantages(r, g, leave_one_out=False, normalize=True, clip_high=1.0)
    assert_close(only_high, _t([1.0, -0.5 / (1 + 2 * EPS), -0.5 / (1 + 2 * EPS), -0.5 / (1 + 2 * EPS)]))
    with pytest.raises(ConfigError, match="advantage_clip_low"):
        compute_advantages(r, g, clip_low=2.0, clip_high=1.0)


def test_dtype_is_preserved():
    """The result has the dtype of the rewards (integer rewards give the default float dtype)."""
    g = _ids([0, 0, 1])
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        assert compute_advantages(torch.tensor([1.0, 0.0, 1.0], dtype=dtype), g).dtype == dtype
    assert compute_advantages(torch.tensor([1, 0, 1]), g).dtype == torch.get_default_dtype()


def _brute_force(r: list[float], g: list[int], loo: bool, normalize: bool) -> list[float]:
    """Independent reference: a per-row loop with torch.std over the reference set, equality by Python sets."""
    out = []
    for i, (ri, gi) in enumerate(zip(r, g)):
        members = [r[j] for j in range(len(r)) if g[j] == gi and (not loo or j != i)]
        if len([1 for gj in g if gj == gi]) == 1:
            out.append(0.0)
            continue
        b = sum(members) / len(members)
        std = 0.0 if len(set(members)) <= 1 else torch.tensor(members, dtype=torch.float64).std().item()
        a = ri - b
        out.append(a / (std + EPS) if normalize and std > 0 else a)
    return out


@pytest.mark.parametrize("loo", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_matches_brute_force_reference_on_random_batches(loo, normalize):
    """Random groups (sizes 1..6, shuffled, rewards from a small non-dyadic set) match the per-row loop."""
    gen = torch.Generator().manual_seed(1234)
    values = torch.tensor([0.0, 0.3, 0.95, 1.0], dtype=torch.float64)
    for _ in range(20):
        sizes = torch.randint(1, 7, (5,), generator=gen).tolist()
        g = torch.repeat_interleave(torch.arange(5), torch.tensor(sizes))
        perm = torch.randperm(len(g), generator=gen)
        g = g[perm]
        r = values[torch.randint(0, 4, (len(g),), generator=gen)]
        got = compute_advantages(r, g, leave_one_out=loo, normalize=normalize)
        want = _t(_brute_force(r.tolist(), g.tolist(), loo, normalize))
        assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_bad_inputs_raise():
    """Mismatched shapes, float group ids and NaN rewards are rejected instead of silently mis-grouped."""
    with pytest.raises(ValueError, match="equal length"):
        compute_advantages(_t([1.0, 0.0]), _ids([0]))
    with pytest.raises(ValueError, match="integer"):
        compute_advantages(_t([1.0, 0.0]), _t([0.0, 0.0]))
    with pytest.raises(ValueError, match="finite"):
        compute_advantages(_t([float("nan"), 0.0]), _ids([0, 0]))


def test_registry_lists_known_names():
    """Estimators are looked up by name; an unknown (or unimplemented upstream) name lists the known ones."""
    assert get_advantage_estimator("grpo") is GRPOAdvantageEstimator
    assert get_advantage_estimator("reinforce_plus_plus") is ReinforcePlusPlusAdvantageEstimator
    with pytest.raises(ConfigError, match="known: grpo, reinforce_plus_plus"):
        get_advantage_estimator("ppo")
    with pytest.raises(ConfigError, match="not implemented"):
        get_advantage_estimator("gdpo")
    with pytest.raises(ConfigError, match="unknown key"):
        build_advantage_estimator({"name": "grpo", "normalise_rewards": True})


def test_a_registered_estimator_is_built_by_name_from_the_complete_sections(monkeypatch):
    """A new estimator is one decorated class: build_advantage_estimator fills both sections' defaults and calls
    its from_config, as for the built-in ones."""
    monkeypatch.setattr(advantages, "ADVANTAGE_ESTIMATORS", dict(advantages.ADVANTAGE_ESTIMATORS))

    @register_advantage_estimator("sign_of_reward")
    class SignEstimator:
        def __init__(self, sections):
            self.sections = sections

        @classmethod
        def from_config(cls, adv_config, loss_config):
            return cls((adv_config, loss_config))

        def __call__(self, rewards, group_ids, mask, *, prev_logprobs=None, reference_logprobs=None):
            return torch.sign(rewards).unsqueeze(-1).expand(mask.shape)

    est = build_advantage_estimator({"name": "sign_of_reward"}, {"reference_policy_kl_penalty": 0.5})
    adv_config, loss_config = est.sections
    assert SignEstimator.name == "sign_of_reward" and adv_config["minus_baseline"] is True
    assert loss_config["reference_policy_kl_penalty"] == 0.5 and loss_config["reference_policy_kl_type"] == "k3"
    assert_close(est(_t([2.0, -1.0]), _ids([0, 0]), torch.ones(2, 3)), _t([[1.0] * 3, [-1.0] * 3]))


def test_grpo_estimator_defaults_and_broadcast():
    """An absent adv_estimator block means grpo with normalize=True, LOO=True, broadcast to every token."""
    est = build_advantage_estimator(None)
    r, g = _t([1.0, 0, 0, 0]), _ids([0, 0, 0, 0])
    mask = torch.ones(4, 3)
    adv = est(r, g, mask)
    assert adv.shape == (4, 3)
    assert_close(adv[:, 2], compute_advantages(r, g, leave_one_out=True, normalize=True))
    plain = build_advantage_estimator({"normalize_rewards": False, "use_leave_one_out_baseline": False})
    assert_close(plain(r, g, mask)[:, 0], _t([0.75, -0.25, -0.25, -0.25]))


def test_reinforce_plus_plus_whitening_by_hand():
    """R++: [1,0] → A=[.5,-.5] broadcast; whitening over 4 tokens: mean 0, var 0.25 ⇒ [1,-1] rows."""
    est = ReinforcePlusPlusAdvantageEstimator()
    adv = est(_t([1.0, 0.0]), _ids([0, 0]), torch.ones(2, 2))
    assert_close(adv, _t([[1.0, 1.0], [-1.0, -1.0]]), rtol=1e-6, atol=1e-6)


def test_reinforce_plus_plus_kl_in_reward_by_hand():
    """R++ with use_kl_in_reward (k1, β=0.5): token (0,0) has logr = ref - prev = -1 ⇒ k1 = 1, A -= 0.5."""
    est = build_advantage_estimator(
        {"name": "reinforce_plus_plus"},
        {"use_kl_in_reward": True, "reference_policy_kl_penalty": 0.5, "reference_policy_kl_type": "k1"},
    )
    prev = torch.zeros(2, 2, dtype=torch.float64)
    ref = _t([[-1.0, 0.0], [0.0, 0.0]])
    adv = est(_t([1.0, 0.0]), _ids([0, 0]), torch.ones(2, 2), prev_logprobs=prev, reference_logprobs=ref)
    # Before whitening: [[0.5-0.5, 0.5], [-0.5, -0.5]] = [[0, .5], [-.5, -.5]]; mean = -0.125;
    # deviations [.125, .625, -.375, -.375]; var = (.015625 + .390625 + .140625·2)/4 = 0.171875.
    dev = _t([[0.125, 0.625], [-0.375, -0.375]])
    assert_close(adv, dev / math.sqrt(0.171875))
