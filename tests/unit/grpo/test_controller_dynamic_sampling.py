"""grpo.use_dynamic_sampling in the real controller over fakes (tests/unit/grpo/fakes.py): rows without reward
spread are dropped per row, generation batches of ``num_prompts_per_step × batch_multiplier`` prompts are drawn
until ``P·G`` rows are cached, the cache is sliced to exactly ``P·G`` rows, and advantages are computed on what
is kept (spec §9 fact 9).

``consumed_prompts`` (the data position a resume continues from) counts every prompt drawn, extra batches
included; upstream's ``consumed_samples`` metric adds only ``num_prompts_per_step`` per step, while its data
loader, like ours, has moved on by every batch drawn.
"""

from __future__ import annotations

import math

import pytest
from torch.testing import assert_close

from rlvr.errors import ConfigError, UserError
from tests.unit.grpo.fakes import TRAIN, build_controller, grpo_config, row_values

# Groups of two need the whole-group baseline: with LOO a row's only peer never has a spread (refused below).
DYNAMIC = [
    "grpo.use_dynamic_sampling=true",
    "grpo.use_leave_one_out_baseline=false",
    "grpo.num_generations_per_prompt=2",
    "policy.train_global_batch_size=4",
    "grpo.max_num_epochs=5",
]


def step(tmp_path, script, *overrides):
    """Step 1: (metrics, trained batch, each trained row's prompt, the harness)."""
    h = build_controller(tmp_path, grpo_config(*DYNAMIC, *overrides), script)
    metrics = h.controller.train_step(1)
    batch = h.policy.trained[-1].batch
    prompts = [h.roles.tokenizer.decode(ids[:4]) for ids in batch["input_ids"]]
    return metrics, batch, prompts, h


def test_groups_without_spread_are_dropped_and_another_batch_is_generated(tmp_path):
    """Batch 1: "1+1=" all right (dropped), "2+2=" mixed; batch 2: "3+3=" mixed, "4+4=" all right (dropped).
    Kept: 4 rows = P·G. Without LOO each [1, 0] group gives ±0.5 / (sqrt(1/2) + 1e-6)."""
    script = {"1+1=": ["2"], "2+2=": ["4", "x"], "3+3=": ["6", "x"], "4+4=": ["8"]}
    metrics, batch, prompts, h = step(tmp_path, script)
    assert len(h.generator.calls) == 2
    assert prompts == ["2+2=", "2+2=", "3+3=", "3+3="]
    assert batch["rewards"].tolist() == [1, 0, 1, 0]
    a = 0.5 / (math.sqrt(0.5) + 1e-6)
    assert_close(row_values(batch), [a, -a] * 2, rtol=0, atol=1e-6)
    assert metrics["train/dynamic_sampling_num_gen_batches"] == 2
    assert metrics["train/dynamic_sampling_num_discarded_valid_samples"] == 0
    assert h.controller.consumed_prompts == 4


def test_the_cache_is_sliced_to_exactly_p_times_g_rows(tmp_path):
    """batch_multiplier=2: one batch of 4 prompts keeps 6 rows ("1+1=" has no spread); the first 4 train and 2
    valid rows are discarded."""
    script = {"1+1=": ["2"], "2+2=": ["4", "x"], "3+3=": ["6", "x"], "4+4=": ["8", "x"]}
    metrics, batch, prompts, h = step(tmp_path, script, "grpo.batch_multiplier=2.0")
    assert [len(c.prompts) for c in h.generator.calls] == [8]
    assert prompts == ["2+2=", "2+2=", "3+3=", "3+3="] and batch["input_ids"].shape[0] == 4
    assert metrics["train/dynamic_sampling_num_gen_batches"] == 1
    assert metrics["train/dynamic_sampling_num_discarded_valid_samples"] == 2
    assert h.controller.consumed_prompts == 4


def test_leave_one_out_filters_per_row_and_the_slice_may_split_a_group(tmp_path):
    """LOO, G=4, one prompt per batch. [1, 0, 0, 0]: only row 0 (its peers all 0) is dropped; batch 2's
    [1, 1, 0, 0] keeps all 4; the slice takes 3 + 1 rows. Advantages are recomputed on the kept rows: the three
    0s are all equal (A = 0) and a group of one has A = 0."""
    script = {"1+1=": ["2", "3", "3", "3"], "2+2=": ["4", "4", "x", "x"]}
    metrics, batch, prompts, _ = step(
        tmp_path,
        script,
        "grpo.use_leave_one_out_baseline=true",
        "grpo.num_prompts_per_step=1",
        "grpo.num_generations_per_prompt=4",
    )
    assert prompts == ["1+1="] * 3 + ["2+2="]
    assert batch["rewards"].tolist() == [0, 0, 0, 1]
    assert not batch["advantages"].any()
    assert metrics["train/dynamic_sampling_num_gen_batches"] == 2
    assert metrics["train/dynamic_sampling_num_discarded_valid_samples"] == 3


def test_spread_is_judged_on_the_unshaped_reward(tmp_path):
    """With DAPO shaping, "1+1=" gets two wrong replies of different lengths: shaped rewards 0 and -0.75 differ,
    the verifier's do not, so the group is dropped (as upstream). Kept rows train on the shaped rewards."""
    script = {"1+1=": ["x", "xxxxxx"], "2+2=": ["4", "x"], "3+3=": ["6", "xxxxxx"], "4+4=": ["8"]}
    _, batch, prompts, _ = step(
        tmp_path, script, "grpo.reward_shaping.enabled=true", "grpo.reward_shaping.overlong_buffer_length=4"
    )
    assert prompts == ["2+2=", "2+2=", "3+3=", "3+3="]
    assert batch["rewards"].tolist() == [1.0, 0.0, 1.0, -0.75]


def test_too_few_rows_with_spread_after_max_gen_batches_stops_with_the_keys_to_change(tmp_path):
    """dynamic_sampling_max_gen_batches=2: batches 1 and 2 may come up short, a short cache after batch 3 stops."""
    script = {p: [gt] for p, gt in [("1+1=", "2"), ("2+2=", "4"), ("3+3=", "6"), ("4+4=", "8")]}
    with pytest.raises(UserError, match="grpo.dynamic_sampling_max_gen_batches"):
        step(tmp_path, script, "grpo.dynamic_sampling_max_gen_batches=2")


def test_data_running_out_mid_step_ends_the_run_with_a_message(tmp_path, capsys):
    """One epoch of 4 prompts: batch 1 keeps 2 rows, batch 2 keeps none, and no batch is left: the partial step is
    not trained, and the log says why rather than ending silently."""
    script = {"1+1=": ["2"], "2+2=": ["4", "x"], "3+3=": ["6"], "4+4=": ["8"]}
    h = build_controller(tmp_path, grpo_config(*DYNAMIC[:-1], "grpo.max_num_epochs=1"), script)
    assert h.controller.train_step(1) is None
    assert not h.policy.trained
    out = capsys.readouterr().out
    assert "[end of data] step 1: grpo.max_num_epochs=1 ran out after 2 generation batch(es)" in out


def test_the_next_step_continues_after_every_prompt_drawn(tmp_path):
    """Step 1 drew 4 of the 6 prompts (two batches); step 2 starts at the fifth, not at the third."""
    train = [*TRAIN, ("1+3=", "4"), ("2+4=", "6")]
    script = {"1+1=": ["2"], **{p: [gt, "x"] for p, gt in train[1:]}}
    h = build_controller(tmp_path, grpo_config(*DYNAMIC), script, train=train)
    h.controller.train_step(1)
    h.controller.train_step(2)
    assert [c.prompts[::2] for c in h.generator.calls] == [["1+1=", "2+2="], ["3+3=", "4+4="], ["1+3=", "2+4="]]
    assert h.controller.consumed_prompts == 6


@pytest.mark.parametrize(("loo", "group"), [(True, 2), (False, 1)])
def test_group_sizes_that_can_never_show_spread_are_refused(loo, group):
    """With LOO a row's reference set is the other G - 1 rows: G = 2 leaves one peer, whose std is always 0."""
    with pytest.raises(ConfigError, match="num_generations_per_prompt >= "):
        grpo_config(
            "grpo.use_dynamic_sampling=true",
            f"grpo.use_leave_one_out_baseline={loo}",
            f"grpo.num_generations_per_prompt={group}",
            f"policy.train_global_batch_size={2 * group}",
            "policy.train_micro_batch_size=1",
        )
