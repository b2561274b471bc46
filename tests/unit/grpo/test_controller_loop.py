"""The GRPO loop of the real controller over fakes (tests/unit/grpo/fakes.py): how many steps run, when
validation runs, what is saved, the zero-signal guard and the generation refit, each from its ``grpo.*`` /
``checkpointing.*`` switch. Four training prompts at two per step make two steps per epoch.
"""

from __future__ import annotations

import json

import pytest

from rlvr.errors import UserError
from tests.unit.grpo.fakes import FakePolicy, build_controller, grpo_config

# Every training prompt has reward spread ([1, 0, 1, 0]); the validation replies score [1, 0] and [1, 1].
SCRIPT = {
    **{p: [gt, "x"] for p, gt in [("1+1=", "2"), ("2+2=", "4"), ("3+3=", "6"), ("4+4=", "8")]},
    "1+2=": ["3", "x"],
    "2+3=": ["5"],
}


def fit(tmp_path, *overrides, script=SCRIPT, **kwargs):
    h = build_controller(tmp_path, grpo_config(*overrides), script, **kwargs)
    return h.controller.fit(), h


def validated_steps(h) -> list[int]:
    return [m["step"] for m in h.metrics_lines() if "validation/accuracy" in m]


@pytest.mark.parametrize(
    ("switches", "expected"),
    [
        (["grpo.val_period=2", "grpo.val_at_start=true", "grpo.val_at_end=true"], [0, 2, 4, 5]),
        (["grpo.val_period=2"], [2, 4]),
        (["grpo.val_period=2", "grpo.val_start_at=3", "grpo.val_at_end=true"], [4, 5]),
        (["grpo.val_at_end=true"], [5]),
        (["grpo.val_period=5", "grpo.val_at_end=true"], [5]),  # the last step validates once
    ],
)
def test_validation_runs_at_the_steps_its_switches_name(tmp_path, switches, expected):
    """val_period / val_start_at / val_at_start (step 0, before training) / val_at_end, over 5 steps."""
    summary, h = fit(tmp_path, "grpo.max_num_steps=5", "grpo.max_num_epochs=3", *switches)
    assert validated_steps(h) == expected
    assert [v["step"] for v in summary["validation"]] == expected


def test_validation_scores_every_validation_prompt_k_times(tmp_path):
    """val_num_generations_per_prompt=2: rewards [1, 0] and [1, 1] -> accuracy 3/4, pass@2 = 1; one generation
    call with the validation prompts and the validation sampling settings, before step 1."""
    _, h = fit(tmp_path, "grpo.val_at_start=true", "grpo.val_num_generations_per_prompt=2")
    line = h.metrics_lines()[0]
    assert (line["step"], line["validation/accuracy"], line["validation/pass@2"]) == (0, 0.75, 1.0)
    validation = h.generator.calls[0]
    assert validation.prompts == ["1+2=", "1+2=", "2+3=", "2+3="]
    assert validation.cfg == h.controller.val_gen_cfg and validation.seed != h.generator.calls[1].seed


def test_max_num_steps_stops_the_run_and_names_the_export(tmp_path):
    summary, h = fit(tmp_path, "grpo.max_num_steps=3", "grpo.max_num_epochs=5")
    assert summary["final_step"] == 3 and len(h.policy.trained) == 3
    assert [m["step"] for m in h.metrics_lines()] == [1, 2, 3]
    (export,) = h.roles.exported
    assert export["iteration"] == 3 and str(export["source_dtype"]) == "torch.bfloat16"


def test_max_num_epochs_ends_the_run_at_its_last_batch(tmp_path):
    """One epoch of 4 prompts is 2 steps, whatever max_num_steps says. Step 2 is the last step: it validates
    (val_at_end) and is saved (as upstream's is_last: last epoch and last batch)."""
    summary, h = fit(
        tmp_path,
        "grpo.max_num_steps=10",
        "grpo.val_at_end=true",
        "checkpointing.enabled=true",
        "checkpointing.save_period=10",
    )
    assert summary["final_step"] == 2
    assert [c.prompts for c in h.generator.calls] == [
        ["1+1="] * 4 + ["2+2="] * 4,
        ["3+3="] * 4 + ["4+4="] * 4,
        ["1+2=", "2+3="],  # validation after step 2
    ]
    assert validated_steps(h) == [2]
    assert sorted(p.name for p in (h.run_dir / "rlvr" / "ckpts").iterdir()) == ["step_2"]


def test_each_shuffled_epoch_visits_every_prompt_once(tmp_path):
    _, h = fit(tmp_path, "data.shuffle=true", "grpo.max_num_epochs=2", "grpo.max_num_steps=10")
    prompts = [p for call in h.generator.calls for p in call.prompts[::4]]
    assert len(prompts) == 8
    assert sorted(prompts[:4]) == sorted(prompts[4:]) == ["1+1=", "2+2=", "3+3=", "4+4="]


def _training_info(h, step: int) -> dict:
    return json.loads((h.run_dir / "rlvr" / "ckpts" / f"step_{step}" / "training_info.json").read_text())


def test_checkpoints_carry_the_validation_metric_when_save_period_matches_val_period(tmp_path):
    """save_period = val_period = 2 over 5 steps, val_at_end: steps 2, 4 and the last one are saved, each with
    the val:accuracy it is ranked by (validation rewards [1, 0, 1, 1] -> 0.75) and the prompts consumed."""
    _, h = fit(
        tmp_path,
        "grpo.max_num_steps=5",
        "grpo.max_num_epochs=3",
        "grpo.val_period=2",
        "grpo.val_at_end=true",
        "checkpointing.enabled=true",
        "checkpointing.save_period=2",
        "checkpointing.keep_top_k=null",
        "grpo.val_num_generations_per_prompt=2",
    )
    assert sorted(p.name for p in (h.run_dir / "rlvr" / "ckpts").iterdir()) == ["step_2", "step_4", "step_5"]
    for step in (2, 4, 5):
        info = _training_info(h, step)
        assert info["val:accuracy"] == 0.75 and info["consumed_prompts"] == 2 * step


def test_a_save_step_without_validation_has_no_metric_to_be_ranked_by(tmp_path):
    """save_period=2 with val_period=3: step 2 and 4 are saved without val:accuracy (spec §9 fact 10); the last
    step validates (val_at_end) and has it."""
    _, h = fit(
        tmp_path,
        "grpo.max_num_steps=5",
        "grpo.max_num_epochs=3",
        "grpo.val_period=3",
        "grpo.val_at_end=true",
        "checkpointing.enabled=true",
        "checkpointing.save_period=2",
        "checkpointing.keep_top_k=null",
    )
    assert "val:accuracy" not in _training_info(h, 2) and "val:accuracy" not in _training_info(h, 4)
    assert "val:accuracy" in _training_info(h, 5)


ALL_RIGHT = {p: [gt] for p, gt in [("1+1=", "2"), ("2+2=", "4"), ("3+3=", "6"), ("4+4=", "8")]}


def test_zero_signal_guard_stops_the_run_after_patience_steps(tmp_path):
    """Every reply right: frac_groups_zero_std = 1 each step; patience 2 with stop_on_zero_signal stops after
    step 2 with no_learning_signal, its metrics line written."""
    with pytest.raises(UserError) as err:
        fit(
            tmp_path,
            "grpo.max_num_steps=5",
            "grpo.max_num_epochs=3",
            "grpo.zero_signal_patience=2",
            "grpo.stop_on_zero_signal=true",
            script=ALL_RIGHT,
        )
    assert err.value.code == "no_learning_signal"
    lines = [json.loads(s) for s in (tmp_path / "run" / "rlvr" / "metrics.jsonl").read_text().splitlines()]
    assert [(m["step"], m["train/frac_groups_zero_std"]) for m in lines] == [(1, 1.0), (2, 1.0)]


def test_zero_signal_guard_warns_every_patience_steps_and_a_step_with_signal_resets_it(tmp_path, capsys):
    """Steps 1-2 and 4-5 have no spread, step 3 has ("3+3=" gets a wrong reply): streaks of 2, 2 -> 2 warnings."""
    script = {**ALL_RIGHT, "1+1=": ["2"] * 4 + ["x"] + ["2"] * 7}  # "1+1=" is sampled in steps 1 and 3
    summary, h = fit(
        tmp_path, "grpo.max_num_steps=5", "grpo.max_num_epochs=3", "grpo.zero_signal_patience=2", script=script
    )
    assert [m["train/frac_groups_zero_std"] for m in h.metrics_lines()] == [1.0, 1.0, 0.5, 1.0, 1.0]
    assert capsys.readouterr().err.count("WARNING [no_learning_signal]") == 2
    assert summary["zero_signal"] == {"patience": 2, "steps_without_signal": 4, "longest_streak": 2, "warnings": 2}


@pytest.mark.parametrize("shares_model", [False, True])
def test_generation_is_refitted_once_after_each_training_step(tmp_path, shares_model):
    """A generator with its own weights gets the trainer's weights before the first generation after a step
    (here validation, then nothing new for the next step's rollout); one that shares the model never does."""
    _, h = fit(tmp_path, "grpo.max_num_steps=2", "grpo.val_period=1", shares_model=shares_model)
    versions = [int(u["version"]) for u in h.generator.weight_updates]
    assert versions == ([] if shares_model else [1, 2])


def test_validation_takes_max_val_samples_in_batches_of_val_batch_size(tmp_path):
    """Four validation prompts, max_val_samples=2, val_batch_size=1: two generation calls, the first two prompts."""
    val = [("1+2=", "3"), ("2+3=", "5"), ("3+4=", "7"), ("4+5=", "9")]
    script = {**SCRIPT, "3+4=": ["7"], "4+5=": ["9"]}
    _, h = fit(
        tmp_path, "grpo.val_at_start=true", "grpo.max_val_samples=2", "grpo.val_batch_size=1", script=script, val=val
    )
    assert [c.prompts for c in h.generator.calls[:2]] == [["1+2="], ["2+3="]]
    assert h.metrics_lines()[0]["validation/accuracy"] == 1.0  # the first reply of each: "3", "5"


@pytest.mark.parametrize("save_period", [10, 1])
def test_early_stop_at_the_validation_threshold_saves_that_step_once(tmp_path, save_period):
    """stop_at_validation_metric: validation/accuracy reaches 0.75 at step 1 (val_period=1): the run stops there,
    saved once whether or not step 1 is a save_period step."""
    summary, h = fit(
        tmp_path,
        "grpo.max_num_steps=5",
        "grpo.val_period=1",
        "grpo.val_num_generations_per_prompt=2",
        "grpo.stop_at_validation_metric=validation/accuracy",
        "grpo.stop_at_validation_metric_threshold=0.75",
        "checkpointing.enabled=true",
        f"checkpointing.save_period={save_period}",
    )
    assert summary["final_step"] == 1 and len(h.policy.trained) == 1
    assert sorted(p.name for p in (h.run_dir / "rlvr" / "ckpts").iterdir()) == ["step_1"]
    assert h.policy.saved_versions == [1]


def _seeds_and_order(tmp_path, seed: int):
    _, h = fit(tmp_path, f"grpo.seed={seed}", "data.shuffle=true", "grpo.max_num_steps=2")
    return [(c.seed, c.prompts[::4]) for c in h.generator.calls]


def test_grpo_seed_decides_the_data_order_and_the_sampling_seeds(tmp_path):
    """The same seed repeats both exactly; another seed changes the sampling seeds (and, here, the order)."""
    first = _seeds_and_order(tmp_path / "a", 1)
    assert _seeds_and_order(tmp_path / "b", 1) == first
    other = _seeds_and_order(tmp_path / "c", 2)
    assert [s for s, _ in other] != [s for s, _ in first] and [p for _, p in other] != [p for _, p in first]


class CrashingPolicy(FakePolicy):
    """Dies in the third train call, as a killed run would."""

    def train(self, batch, loss_fn, **kwargs):
        if len(self.trained) == 2:
            raise RuntimeError("killed")
        return super().train(batch, loss_fn, **kwargs)


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    """save_period=2, killed in step 3: the same run again loads step 2's weights and data position and trains
    steps 3-4 on the next prompts (the second epoch); every step is logged once."""
    overrides = [
        "grpo.max_num_steps=4",
        "grpo.max_num_epochs=2",
        "checkpointing.enabled=true",
        "checkpointing.save_period=2",
    ]
    with pytest.raises(RuntimeError, match="killed"):
        fit(tmp_path, *overrides, policy=CrashingPolicy())
    summary, h = fit(tmp_path, *overrides)
    assert [int(m["version"]) for m in h.policy.loaded] == [2] and h.policy.version == 4
    assert [c.prompts[::4] for c in h.generator.calls] == [["1+1=", "2+2="], ["3+3=", "4+4="]]
    assert [m["step"] for m in h.metrics_lines()] == [1, 2, 3, 4] and summary["final_step"] == 4
